// SPDX-License-Identifier: GPL-2.0
/* Wrappers of static inline kernel functions for the Rust side; see helpers.h. */
#include "helpers.h"

void dmr_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

sector_t dmr_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int dmr_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

dev_t dmr_bdev_dev(struct block_device *bdev)
{
	return bdev->bd_dev;
}

void dmr_bio_queue_init(struct dmr_bio_queue *q)
{
	spin_lock_init(&q->lock);
	bio_list_init(&q->list);
}

void dmr_bio_queue_push(struct dmr_bio_queue *q, struct bio *bio)
{
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	bio_list_add(&q->list, bio);
	spin_unlock_irqrestore(&q->lock, flags);
}

struct bio *dmr_bio_queue_pop(struct dmr_bio_queue *q)
{
	unsigned long flags;
	struct bio *bio;

	spin_lock_irqsave(&q->lock, flags);
	bio = bio_list_pop(&q->list);
	spin_unlock_irqrestore(&q->lock, flags);
	return bio;
}

void dmr_init_work(struct work_struct *work, work_func_t fn)
{
	INIT_WORK(work, fn);
}

bool dmr_queue_work(struct workqueue_struct *wq, struct work_struct *work)
{
	return queue_work(wq, work);
}

struct workqueue_struct *dmr_alloc_workqueue(const char *name)
{
	/* WQ_MEM_RECLAIM: the worker completes I/O, so it must make progress under memory
	 * pressure, like every dm target's workqueue. */
	/* Ordered: the relocation work and the scan never run at the same time. */
	return alloc_ordered_workqueue("%s", WQ_MEM_RECLAIM, name);
}

int dmr_uevent(struct dm_target *ti, char **envp)
{
	struct mapped_device *md = dm_table_get_md(ti->table);

	return kobject_uevent_env(&disk_to_dev(dm_disk(md))->kobj, KOBJ_CHANGE, envp);
}

const char *dmr_device_name(struct dm_target *ti)
{
	return dm_device_name(dm_table_get_md(ti->table));
}

unsigned int dmr_noio_save(void)
{
	return memalloc_noio_save();
}

void dmr_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

void dmr_rcu_read_lock(void)
{
	rcu_read_lock();
}

void dmr_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

u32 dmr_crc32_le(u32 seed, const void *buf, size_t len)
{
	return crc32_le(seed, buf, len);
}

void dmr_set_block_size(struct queue_limits *limits, unsigned int bytes)
{
	if (limits->logical_block_size < bytes)
		limits->logical_block_size = bytes;
	if (limits->physical_block_size < bytes)
		limits->physical_block_size = bytes;
	if (limits->io_min < bytes)
		limits->io_min = bytes;
}

static void dmr_bio_copy(struct bio *bio, const struct bvec_iter *start, unsigned int skip,
			 void *buf, unsigned int len, bool out)
{
	struct bvec_iter iter = *start;
	struct bio_vec bv;

	bio_advance_iter(bio, &iter, skip);
	iter.bi_size = min(iter.bi_size, len);
	__bio_for_each_segment(bv, bio, iter, iter) {
		if (out)
			memcpy_from_bvec(buf, &bv);
		else
			memcpy_to_bvec(&bv, buf);
		buf += bv.bv_len;
	}
}

void dmr_bio_copy_out(struct bio *bio, const struct bvec_iter *start, unsigned int skip, void *dst,
		      unsigned int len)
{
	dmr_bio_copy(bio, start, skip, dst, len, true);
}

void dmr_bio_copy_in(struct bio *bio, const struct bvec_iter *start, unsigned int skip,
		     const void *src, unsigned int len)
{
	dmr_bio_copy(bio, start, skip, (void *)src, len, false);
}

void dmr_bio_endio(struct bio *bio, u8 status)
{
	bio->bi_status = (__force blk_status_t)status;
	bio_endio(bio);
}

struct dmr_pool {
	struct bio_set bs;
};

/* Bios in reserve: the worker, a message and a constructor may each have one in flight. */
#define DMR_POOL_BIOS 4

struct dmr_pool *dmr_pool_alloc(void)
{
	struct dmr_pool *pool = kzalloc(sizeof(*pool), GFP_KERNEL);

	if (!pool)
		return NULL;
	if (bioset_init(&pool->bs, DMR_POOL_BIOS, 0, BIOSET_NEED_BVECS)) {
		kfree(pool);
		return NULL;
	}
	return pool;
}

void dmr_pool_free(struct dmr_pool *pool)
{
	bioset_exit(&pool->bs);
	kfree(pool);
}

int dmr_rw_sync(struct dmr_pool *pool, struct block_device *bdev, sector_t sector, void *buf,
		unsigned int len, unsigned int opf)
{
	unsigned int nr = DIV_ROUND_UP(offset_in_page(buf) + len, PAGE_SIZE);
	struct bio *bio;
	int ret = 0;

	if (nr > BIO_MAX_VECS)
		return -EINVAL;
	/* GFP_NOIO may sleep: from the mempool, this never fails. */
	bio = bio_alloc_bioset(bdev, nr ? nr : 1, (__force blk_opf_t)opf, GFP_NOIO, &pool->bs);
	if (!bio)
		return -ENOMEM;
	bio->bi_iter.bi_sector = sector;
	while (len) {
		unsigned int off = offset_in_page(buf);
		unsigned int n = min_t(unsigned int, len, PAGE_SIZE - off);
		struct page *page = is_vmalloc_addr(buf) ? vmalloc_to_page(buf) : virt_to_page(buf);

		if (bio_add_page(bio, page, n, off) != n) {
			ret = -EIO;
			goto out;
		}
		buf += n;
		len -= n;
	}
	ret = submit_bio_wait(bio);
out:
	bio_put(bio);
	return ret;
}

void dmr_init_delayed_work(struct delayed_work *dwork, work_func_t fn)
{
	INIT_DELAYED_WORK(dwork, fn);
}

bool dmr_queue_delayed_work(struct workqueue_struct *wq, struct delayed_work *dwork,
			    unsigned int msecs)
{
	return queue_delayed_work(wq, dwork, msecs_to_jiffies(msecs));
}

bool dmr_cancel_delayed_work_sync(struct delayed_work *dwork)
{
	return cancel_delayed_work_sync(dwork);
}

u64 __percpu *dmr_pcpu_alloc(unsigned int n)
{
	return __alloc_percpu(n * sizeof(u64), sizeof(u64));
}

void dmr_pcpu_free(u64 __percpu *p)
{
	free_percpu(p);
}

void dmr_pcpu_add(u64 __percpu *p, unsigned int i, u64 v)
{
	this_cpu_add(p[i], v);
}

u64 dmr_pcpu_add_return(u64 __percpu *p, unsigned int i, u64 v)
{
	return this_cpu_add_return(p[i], v);
}

u64 dmr_pcpu_sum(u64 __percpu *p, unsigned int i)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu_ptr(p, cpu)[i];
	return sum;
}

void dmr_pcpu_zero(u64 __percpu *p, unsigned int i)
{
	int cpu;

	for_each_possible_cpu(cpu)
		per_cpu_ptr(p, cpu)[i] = 0;
}

u64 dmr_now_ns(void)
{
	return ktime_get_ns();
}

/* One shared limit for the target's warnings: a burst of 10 per 5 s. */
static DEFINE_RATELIMIT_STATE(dmr_rs, 5 * HZ, 10);

bool dmr_ratelimit(void)
{
	return __ratelimit(&dmr_rs);
}

struct dmr_gate {
	struct srcu_struct srcu;
};

struct dmr_gate *dmr_gate_alloc(void)
{
	struct dmr_gate *g = kzalloc(sizeof(*g), GFP_KERNEL);

	if (!g)
		return NULL;
	if (init_srcu_struct(&g->srcu)) {
		kfree(g);
		return NULL;
	}
	return g;
}

void dmr_gate_free(struct dmr_gate *g)
{
	cleanup_srcu_struct(&g->srcu);
	kfree(g);
}

struct srcu_struct *dmr_gate_srcu(struct dmr_gate *g)
{
	return &g->srcu;
}

void dmr_gate_wait(struct dmr_gate *g)
{
	synchronize_srcu(&g->srcu);
}

void dmr_submit_remapped(struct bio *bio)
{
	dm_submit_bio_remap(bio, NULL);
}
