# SPDX-License-Identifier: GPL-2.0
# Builds dm-remap.ko out of tree against a Rust-enabled, prepared kernel build directory:
#   make KDIR=/path/to/kernel/build
# `cargo xtask build [--kernel NAME]` does this with one of the project's kernels
# (docs/kernels.md).
KDIR ?= /lib/modules/$(shell uname -r)/build

# C must be compiled by the kernel's own compiler: clang kernels (the project's 6.12 test
# kernels) want LLVM=1, gcc kernels (Debian's) the exact gcc named in CONFIG_CC_VERSION_TEXT
# (e.g. x86_64-linux-gnu-gcc-14). Rust and bindgen are the same either way.
ifneq ($(shell grep -s '^CONFIG_CC_IS_CLANG=y' $(KDIR)/.config),)
KCC_ARGS := LLVM=1
else
KCC_ARGS := $(addprefix CC=,$(shell sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\).*/\1/p' $(KDIR)/.config 2>/dev/null))
endif

all: modules

modules clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(KCC_ARGS) $@

.PHONY: all modules clean
