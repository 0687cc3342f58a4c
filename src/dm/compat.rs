// SPDX-License-Identifier: GPL-2.0

//! The differences between the kernels dm-remap builds for, in one place.
//!
//! The Kbuild file sets `--cfg dmr_kernel_7_2` when the kernel is 7.2 or newer (see
//! docs/kernels.md); without it the API is that of 6.12. Nothing outside `src/dm/` tests a
//! kernel version: the rest of the module uses what this module and its siblings export.

/// The kernel's `module!` macro with the keys spelled as that kernel wants them: 6.12 takes
/// `author: "..."`, 7.2 only `authors: ["..."]`.
#[cfg(not(dmr_kernel_7_2))]
macro_rules! remap_module {
    (type: $t:ident, name: $name:tt, author: $author:tt, description: $desc:tt, license: $lic:tt $(,)?) => {
        ::kernel::prelude::module! {
            type: $t,
            name: $name,
            author: $author,
            description: $desc,
            license: $lic,
        }
    };
}

/// See the 6.12 variant above.
#[cfg(dmr_kernel_7_2)]
macro_rules! remap_module {
    (type: $t:ident, name: $name:tt, author: $author:tt, description: $desc:tt, license: $lic:tt $(,)?) => {
        ::kernel::prelude::module! {
            type: $t,
            name: $name,
            authors: [$author],
            description: $desc,
            license: $lic,
        }
    };
}

/// Names the generated bindings use unqualified, by kernel.
pub(super) mod bindgen_prelude {
    /// From 7.2 on, the kernel's bindgen parameters (which ours include) derive
    /// `MaybeZeroable` for every struct and union; 6.12 has no such derive.
    #[cfg(dmr_kernel_7_2)]
    pub(in crate::dm) use pin_init::MaybeZeroable;
}
