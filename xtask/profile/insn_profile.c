// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin for `cargo xtask profile`: counts the guest instructions executed at each
 * translation-block start address, exactly (not sampled), and writes the counts to a file at
 * each marker the guest executes. The marker is `xchg %bx,%bx` (66 87 db), which nothing
 * else in the guest runs; `vmtest profile` executes it around each measured fio run, so each
 * file holds one window. Under `-icount` the guest's instruction stream is the same from run
 * to run, so the counts are deterministic.
 *
 * Arguments: out=<prefix>; window k goes to <prefix>.<k>, one "<hex vaddr> <instructions>"
 * line per block start with a non-zero count.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Instructions counted at one guest address, over all its translations. */
struct site {
	uint64_t vaddr;
	uint64_t insns;
};

/* One translation of a block: where it counts and how many instructions it has. */
struct tb_info {
	struct site *site;
	uint64_t n;
};

static GHashTable *sites;
static const char *prefix = "profile";
static unsigned window;

/* The vCPUs run one at a time under -icount (round robin on one thread): no locking. */
static void tb_exec(unsigned int vcpu, void *udata)
{
	struct tb_info *t = udata;

	(void)vcpu;
	t->site->insns += t->n;
}

static void dump(void)
{
	char path[4096];
	GHashTableIter it;
	gpointer key, value;
	FILE *f;

	snprintf(path, sizeof(path), "%s.%u", prefix, window++);
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "insn_profile: cannot write %s\n", path);
		return;
	}
	g_hash_table_iter_init(&it, sites);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		struct site *s = value;

		if (s->insns)
			fprintf(f, "%" PRIx64 " %" PRIu64 "\n", s->vaddr, s->insns);
		s->insns = 0;
	}
	fclose(f);
}

static void marker(unsigned int vcpu, void *udata)
{
	(void)vcpu;
	(void)udata;
	dump();
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct site *s = g_hash_table_lookup(sites, &vaddr);
	struct tb_info *t;

	(void)id;
	if (!s) {
		s = g_new0(struct site, 1);
		s->vaddr = vaddr;
		g_hash_table_insert(sites, &s->vaddr, s);
	}
	/* Kept for the translation's lifetime; translations are few beside executions. */
	t = g_new0(struct tb_info, 1);
	t->site = s;
	t->n = n;
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, t);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint8_t b[3];

		if (qemu_plugin_insn_size(insn) == 3 && qemu_plugin_insn_data(insn, b, 3) == 3 &&
		    b[0] == 0x66 && b[1] == 0x87 && b[2] == 0xdb)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
	(void)id;
	(void)p;
	dump();
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	(void)info;
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], "out=", 4) == 0)
			prefix = argv[i] + 4;
	}
	sites = g_hash_table_new(g_int64_hash, g_int64_equal);
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
