/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for dm-remap's Rust device-mapper abstraction.
 *
 * Rust cannot call static inline functions or evaluate macros that cast to __bitwise
 * types, so the few the abstraction needs are wrapped here. Nothing else lives in C.
 */
#ifndef DM_REMAP_HELPERS_H
#define DM_REMAP_HELPERS_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/crc32.h>
#include <linux/device-mapper.h>
#include <linux/kobject.h>
#include <linux/percpu.h>
#include <linux/random.h>
#include <linux/ratelimit.h>
#include <linux/timekeeping.h>
#include <linux/sched/mm.h>

#include "srcu_check.h"
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/workqueue.h>

/* Values of __bitwise constants, as plain integers bindgen can read. */
enum dmr_const {
	DMR_BLK_STS_OK = (__force int)BLK_STS_OK,
	DMR_BLK_STS_IOERR = (__force int)BLK_STS_IOERR,
	DMR_BLK_STS_MEDIUM = (__force int)BLK_STS_MEDIUM,
	DMR_BLK_STS_NOSPC = (__force int)BLK_STS_NOSPC,
	DMR_BLK_STS_AGAIN = (__force int)BLK_STS_AGAIN,
	DMR_BLK_STS_TARGET = (__force int)BLK_STS_TARGET,
	DMR_BLK_STS_NOTSUPP = (__force int)BLK_STS_NOTSUPP,
	DMR_BLK_STS_TIMEOUT = (__force int)BLK_STS_TIMEOUT,
	DMR_BLK_STS_TRANSPORT = (__force int)BLK_STS_TRANSPORT,
	DMR_BLK_STS_RESV_CONFLICT = (__force int)BLK_STS_RESV_CONFLICT,
	DMR_BLK_STS_INVAL = (__force int)BLK_STS_INVAL,
	DMR_BLK_STS_PROTECTION = (__force int)BLK_STS_PROTECTION,
	DMR_BLK_STS_RESOURCE = (__force int)BLK_STS_RESOURCE,
	DMR_BLK_STS_DEV_RESOURCE = (__force int)BLK_STS_DEV_RESOURCE,
	DMR_BLK_STS_OFFLINE = (__force int)BLK_STS_OFFLINE,
	DMR_REQ_PREFLUSH = (__force int)REQ_PREFLUSH,
	DMR_REQ_FUA = (__force int)REQ_FUA,
	DMR_REQ_NOWAIT = (__force int)REQ_NOWAIT,
	DMR_REQ_OP_READ = (__force int)REQ_OP_READ,
	DMR_REQ_OP_WRITE = (__force int)REQ_OP_WRITE,
	DMR_REQ_SYNC = (__force int)REQ_SYNC,
	DMR_REQ_META = (__force int)REQ_META,
};

/* A bio list with an irq-safe lock: end_io (any context) hands bios to the worker. */
struct dmr_bio_queue {
	spinlock_t lock;
	struct bio_list list;
};

void dmr_bio_queue_init(struct dmr_bio_queue *q);
void dmr_bio_queue_push(struct dmr_bio_queue *q, struct bio *bio);
struct bio *dmr_bio_queue_pop(struct dmr_bio_queue *q);

void dmr_init_work(struct work_struct *work, work_func_t fn);
void dmr_init_delayed_work(struct delayed_work *dwork, work_func_t fn);
bool dmr_queue_delayed_work(struct workqueue_struct *wq, struct delayed_work *dwork,
			    unsigned int msecs);
bool dmr_cancel_delayed_work_sync(struct delayed_work *dwork);

/* Per-CPU u64 counters: cheap to bump on the I/O path, summed when read. */
u64 __percpu *dmr_pcpu_alloc(unsigned int n);
void dmr_pcpu_free(u64 __percpu *p);
void dmr_pcpu_add(u64 __percpu *p, unsigned int i, u64 v);
u64 dmr_pcpu_add_return(u64 __percpu *p, unsigned int i, u64 v);
u64 dmr_pcpu_sum(u64 __percpu *p, unsigned int i);
void dmr_pcpu_zero(u64 __percpu *p, unsigned int i);

u64 dmr_now_ns(void);
bool dmr_ratelimit(void);
bool dmr_queue_work(struct workqueue_struct *wq, struct work_struct *work);
struct workqueue_struct *dmr_alloc_workqueue(const char *name);

/*
 * A write gate: SRCU whose read side spans a write from map to end_io (srcu_down_read and
 * srcu_up_read may run in different contexts), so a relocation can wait for every write
 * mapped before it marked its block.
 */
struct dmr_gate;
struct dmr_gate *dmr_gate_alloc(void);
void dmr_gate_free(struct dmr_gate *g);
/* The gate's srcu_struct: map and end_io call __srcu_read_lock/unlock on it directly (the
 * I/O path's cost is counted in instructions; see docs/BENCHMARKS.md). */
struct srcu_struct *dmr_gate_srcu(struct dmr_gate *g);
void dmr_gate_wait(struct dmr_gate *g);

/* Submits a clone the target took in map (DM_MAPIO_SUBMITTED) after remapping it. */
void dmr_submit_remapped(struct bio *bio);

/*
 * A KOBJ_CHANGE uevent on the dm device's disk with extra "KEY=value" variables (envp ends
 * with NULL), as dm-verity does for its errors. Process context; may sleep.
 */
int dmr_uevent(struct dm_target *ti, char **envp);

/* The dm device's "major:minor" name (dm_device_name), valid while the target lives. */
const char *dmr_device_name(struct dm_target *ti);

unsigned int dmr_noio_save(void);
void dmr_noio_restore(unsigned int flags);

void dmr_rcu_read_lock(void);
void dmr_rcu_read_unlock(void);

u32 dmr_crc32_le(u32 seed, const void *buf, size_t len);

void dmr_set_block_size(struct queue_limits *limits, unsigned int bytes);

/* Data of a bio from a saved position (end_io may see the bio advanced). */
void dmr_bio_copy_out(struct bio *bio, const struct bvec_iter *start, unsigned int skip, void *dst,
		      unsigned int len);
void dmr_bio_copy_in(struct bio *bio, const struct bvec_iter *start, unsigned int skip,
		     const void *src, unsigned int len);
void dmr_bio_endio(struct bio *bio, u8 status);

/*
 * A device's own bio pool (a bio_set with bvecs): the target's synchronous I/O allocates
 * from it with GFP_NOIO, which waits for a free bio instead of failing, so relocation makes
 * progress under memory pressure (a stacking driver must not depend on the page allocator).
 */
struct dmr_pool;
struct dmr_pool *dmr_pool_alloc(void);
void dmr_pool_free(struct dmr_pool *pool);

/* Synchronous I/O from a kmalloc or vmalloc buffer; process context only. */
int dmr_rw_sync(struct dmr_pool *pool, struct block_device *bdev, sector_t sector, void *buf,
		unsigned int len, unsigned int opf);

void dmr_bio_set_dev(struct bio *bio, struct block_device *bdev);
sector_t dmr_bdev_nr_sectors(struct block_device *bdev);
unsigned int dmr_bdev_logical_block_size(struct block_device *bdev);
dev_t dmr_bdev_dev(struct block_device *bdev);

#endif
