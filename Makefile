# SPDX-License-Identifier: GPL-2.0
# Builds dm-remap.ko out of tree against a Rust-enabled kernel build directory:
#   make KDIR=/path/to/kernel/build
# `cargo xtask build` does this with the project's own test kernel.
KDIR ?= /lib/modules/$(shell uname -r)/build

all: modules

modules clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 $@

.PHONY: all modules clean
