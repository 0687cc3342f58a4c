//! What a device already holds, as libblkid sees it: the same probe `wipefs`, `mkfs` and
//! udev use, filesystems, RAID and LVM labels and partition tables included, rather than a
//! hand-written list of magics.
//!
//! libblkid is loaded at run time (`dlopen("libblkid.so.1")`): the tool then builds without
//! libblkid-dev and runs wherever util-linux is installed, which is every Debian system.
//! Where it cannot be loaded, `format` falls back to the kernel's blank rule (first and last
//! MiB all zeroes) rather than to nothing.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::RawFd;

type Probe = *mut c_void;

/// The libblkid functions used, from `<blkid/blkid.h>` (util-linux's stable ABI).
type NewProbe = unsafe extern "C" fn() -> Probe;
type SetDevice = unsafe extern "C" fn(Probe, c_int, i64, i64) -> c_int;
type Enable = unsafe extern "C" fn(Probe, c_int) -> c_int;
type DoProbe = unsafe extern "C" fn(Probe) -> c_int;
type Lookup = unsafe extern "C" fn(Probe, *const c_char, *mut *const c_char, *mut usize) -> c_int;
type FreeProbe = unsafe extern "C" fn(Probe);

struct Lib {
    new_probe: NewProbe,
    set_device: SetDevice,
    enable_partitions: Enable,
    enable_superblocks: Enable,
    do_safeprobe: DoProbe,
    lookup_value: Lookup,
    free_probe: FreeProbe,
}

fn load() -> Option<Lib> {
    // SAFETY: dlopen with a constant, NUL-terminated name; the handle is never closed, so the symbols stay valid for the life of the process.
    let h = unsafe { nix::libc::dlopen(c"libblkid.so.1".as_ptr(), nix::libc::RTLD_NOW | nix::libc::RTLD_LOCAL) };
    if h.is_null() {
        return None;
    }
    let sym = |name: &CStr| {
        // SAFETY: `h` is a live handle and `name` is NUL-terminated.
        let p = unsafe { nix::libc::dlsym(h, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    // SAFETY: each symbol is the libblkid function of that name, whose C prototype is the field's type (blkid.h: blkid_probe is a pointer, blkid_loff_t is int64_t).
    unsafe {
        Some(Lib {
            new_probe: std::mem::transmute::<*mut c_void, NewProbe>(sym(c"blkid_new_probe")?),
            set_device: std::mem::transmute::<*mut c_void, SetDevice>(sym(c"blkid_probe_set_device")?),
            enable_partitions: std::mem::transmute::<*mut c_void, Enable>(sym(c"blkid_probe_enable_partitions")?),
            enable_superblocks: std::mem::transmute::<*mut c_void, Enable>(sym(c"blkid_probe_enable_superblocks")?),
            do_safeprobe: std::mem::transmute::<*mut c_void, DoProbe>(sym(c"blkid_do_safeprobe")?),
            lookup_value: std::mem::transmute::<*mut c_void, Lookup>(sym(c"blkid_probe_lookup_value")?),
            free_probe: std::mem::transmute::<*mut c_void, FreeProbe>(sym(c"blkid_free_probe")?),
        })
    }
}

/// What the probe found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing libblkid knows.
    Nothing,
    /// A signature: e.g. `ext4`, `xfs`, `LVM2_member`, `linux_raid_member`, or a partition
    /// table (`gpt`, `dos`).
    Signature(String),
    /// More than one signature (libblkid's "ambiguous"), which is not blank either.
    Ambiguous,
}

/// Probes the open device `fd` for filesystems, volume labels and partition tables.
/// `None`: libblkid is not available or failed.
pub fn probe(fd: RawFd) -> Option<Found> {
    let lib = load()?;
    // SAFETY: the probe is created, used on `fd` (open for the whole call, owned by the caller) and freed on every path; values returned by lookup point into the probe and are copied before it is freed.
    unsafe {
        let pr = (lib.new_probe)();
        if pr.is_null() {
            return None;
        }
        let result = (|| {
            if (lib.set_device)(pr, fd, 0, 0) != 0 {
                return None;
            }
            (lib.enable_superblocks)(pr, 1);
            (lib.enable_partitions)(pr, 1);
            match (lib.do_safeprobe)(pr) {
                0 => {}
                1 => return Some(Found::Nothing),
                -2 => return Some(Found::Ambiguous),
                _ => return None,
            }
            for key in [c"TYPE", c"PTTYPE"] {
                let mut v: *const c_char = std::ptr::null();
                let mut len = 0usize;
                if (lib.lookup_value)(pr, key.as_ptr(), &mut v, &mut len) == 0 && !v.is_null() {
                    return Some(Found::Signature(CStr::from_ptr(v).to_string_lossy().into_owned()));
                }
            }
            Some(Found::Signature("an unnamed signature".into()))
        })();
        (lib.free_probe)(pr);
        result
    }
}
