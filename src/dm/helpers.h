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
#include <linux/device-mapper.h>

/* Values of __bitwise constants, as plain integers bindgen can read. */
enum dmr_const {
	DMR_BLK_STS_OK = (__force int)BLK_STS_OK,
	DMR_BLK_STS_IOERR = (__force int)BLK_STS_IOERR,
	DMR_BLK_STS_MEDIUM = (__force int)BLK_STS_MEDIUM,
	DMR_BLK_STS_NOSPC = (__force int)BLK_STS_NOSPC,
	DMR_BLK_STS_AGAIN = (__force int)BLK_STS_AGAIN,
	DMR_BLK_STS_TARGET = (__force int)BLK_STS_TARGET,
	DMR_BLK_STS_NOTSUPP = (__force int)BLK_STS_NOTSUPP,
	DMR_REQ_PREFLUSH = (__force int)REQ_PREFLUSH,
	DMR_REQ_FUA = (__force int)REQ_FUA,
	DMR_REQ_NOWAIT = (__force int)REQ_NOWAIT,
};

void dmr_bio_set_dev(struct bio *bio, struct block_device *bdev);
unsigned int dmr_bio_op(const struct bio *bio);
sector_t dmr_bdev_nr_sectors(struct block_device *bdev);
unsigned int dmr_bdev_logical_block_size(struct block_device *bdev);
dev_t dmr_bdev_dev(struct block_device *bdev);

#endif
