/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The write gate (helpers.h) is left from end_io, which may run in hard interrupt context.
 * Tree SRCU's __srcu_read_unlock is a per-CPU counter increment with a full barrier: safe
 * there. Tiny SRCU's (CONFIG_TINY_SRCU, selected by TINY_RCU: !SMP && !PREEMPT_RCU) is a
 * plain read-modify-write that an interrupt can tear, and it wakes the grace-period waiter
 * only from task context, so a relocation's synchronize_srcu could wait for ever under the
 * metadata lock. Such a kernel is refused at build time (docs/design.md, "The write gate").
 * Included by helpers.h, and compiled alone by a host test with and without the symbol.
 */
#ifndef DMR_SRCU_CHECK_H
#define DMR_SRCU_CHECK_H
#if defined(CONFIG_TINY_SRCU) || !defined(CONFIG_TREE_SRCU)
#error "dm-remap needs Tree SRCU (CONFIG_TREE_SRCU): kernels with CONFIG_TINY_SRCU (uniprocessor, no preemptible RCU) are not supported"
#endif
#endif
