//! Executable file mappings, for attribution after the process is gone:
//! called from the mmap/mprotect hooks (`stack_alloc`: fexit or syscall
//! tracepoints) when they succeed with PROT_EXEC, and from
//! `sched_process_exec` for what exec itself mapped (the program and its
//! ELF interpreter).
//!
//! The VMA is looked up with `bpf_find_vma` and described by its file's
//! device, inode, generation and name. This replaces a per-CPU perf event
//! with `mmap2` records: the kernel writes such an event's fork and exit
//! records for every thread of the host, which cost more than the rest of
//! the tracer on a thread create+join loop.
use core::mem::offset_of;

use aya_ebpf::{
    bindings::pt_regs,
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel_str_bytes,
        generated::{self as raw, bpf_find_vma, bpf_get_current_task_btf},
    },
};
use threadtrace_common::{EventKind, Mapping, ABSENT, MAPPING_NAMES};

use crate::{
    emit::{current_user_reg, reserve},
    maps::CONFIG,
};

const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;
const VM_EXEC: u64 = 0x4;
const AT_NULL: u64 = 0;
const AT_BASE: u64 = 7;
/// Pairs of saved_auxv looked at for AT_BASE (the kernel writes about 20).
const AUXV_PAIRS: usize = 32;
/// VMAs of the interpreter walked from its base to its text.
const INTERP_VMAS: usize = 4;
/// Mounts a name's walk crosses between two names on its way up to the
/// process's root: a tmpfs /tmp is one, a file bind-mounted into a
/// container one, mounts stacked on one mount point one each.
const MOUNTS_PER_NAME: usize = 3;

/// What the find_vma callback copies out of the VMA.
#[repr(C)]
struct Vma {
    start: u64,
    end: u64,
    pgoff: u64,
    file: u64,
    flags: u64,
}

/// A kernel read, 0 when it faults: the helper zeroes what it could not
/// read, so its result is not looked at. A branch on it would double the
/// paths the verifier walks at every read of the name's walk.
#[inline(always)]
unsafe fn read_u64(base: u64, off: u32) -> u64 {
    let mut v: u64 = 0;
    raw::bpf_probe_read_kernel(
        &mut v as *mut u64 as *mut c_void,
        8,
        base.wrapping_add(off as u64) as *const c_void,
    );
    v
}

#[inline(always)]
unsafe fn read_u32(base: u64, off: u32) -> u32 {
    let mut v: u32 = 0;
    raw::bpf_probe_read_kernel(
        &mut v as *mut u32 as *mut c_void,
        4,
        base.wrapping_add(off as u64) as *const c_void,
    );
    v
}

/// bpf_find_vma's callback: runs under the mm's lock with the VMA found.
#[inline(never)]
extern "C" fn copy_vma(_task: *mut c_void, vma: *mut c_void, out: *mut c_void) -> i64 {
    let cfg = CONFIG.load();
    let vma = vma as u64;
    let out = out as *mut Vma;
    // SAFETY: fault-checked kernel reads; `out` is the caller's stack slot.
    unsafe {
        (*out).start = read_u64(vma, cfg.vma_start);
        (*out).end = read_u64(vma, cfg.vma_end);
        (*out).pgoff = read_u64(vma, cfg.vma_pgoff);
        (*out).file = read_u64(vma, cfg.vma_file);
        (*out).flags = read_u64(vma, cfg.vma_flags);
    }
    0
}

/// The current task's VMA containing `addr`.
#[inline(always)]
fn find(addr: u64) -> Option<Vma> {
    let mut v = Vma {
        start: 0,
        end: 0,
        pgoff: 0,
        file: 0,
        flags: 0,
    };
    // SAFETY: the helper calls `copy_vma` with `v` while the VMA is held.
    let r = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            addr,
            copy_vma as *mut c_void,
            &mut v as *mut Vma as *mut c_void,
            0,
        )
    };
    (r == 0).then_some(v)
}

fn configured() -> bool {
    let c = CONFIG.load();
    ![
        c.vma_start,
        c.vma_end,
        c.vma_pgoff,
        c.vma_file,
        c.vma_flags,
        c.file_inode,
        c.file_path,
        c.path_dentry,
        c.dentry_name,
        c.dentry_parent,
        c.qstr_name,
        c.inode_ino,
        c.inode_generation,
        c.inode_sb,
        c.sb_dev,
    ]
    .contains(&ABSENT)
}

/// Whether names cross mounts: the offsets from BTF are all known.
fn crosses_mounts() -> bool {
    let c = CONFIG.load();
    ![
        c.path_mnt,
        c.mount_mnt,
        c.mount_parent,
        c.mount_mountpoint,
        c.vfsmount_root,
    ]
    .contains(&ABSENT)
}

/// A dentry on a mount (its `struct vfsmount`, inside a `struct mount`).
struct Place {
    dentry: u64,
    vfsmnt: u64,
}

enum Climb {
    /// Not the root of a mount: its name is next.
    Name,
    /// The process's root.
    Root,
    /// Not to be named further: `top` when taken for the root all the same.
    Lost { top: bool },
}

/// From the root of a mount to where it is mounted, until a dentry to name
/// or the process's root (that dentry on that mount), as the kernel's
/// d_path does. Its own loop, whose count the verifier forgets after it:
/// one counter shared with the names would make it walk every mix of
/// names and mounts.
#[inline(always)]
fn climb(at: &mut Place, root: &Place, cross: bool) -> Climb {
    let cfg = CONFIG.load();
    for crossed in 0..MOUNTS_PER_NAME + 1 {
        if root.dentry != 0 && at.dentry == root.dentry && at.vfsmnt == root.vfsmnt {
            return Climb::Root;
        }
        // SAFETY: fault-checked kernel reads of the mount.
        unsafe {
            if !cross || at.dentry != read_u64(at.vfsmnt, cfg.vfsmount_root) {
                return Climb::Name;
            }
            // container_of(vfsmnt, struct mount, mnt)
            let mnt = at.vfsmnt.wrapping_sub(cfg.mount_mnt as u64);
            let up = read_u64(mnt, cfg.mount_parent);
            if up == mnt || up == 0 || crossed == MOUNTS_PER_NAME {
                // The top of a tree of mounts, the process's root not met
                // on the way: a mount lazily unmounted or detached (an
                // overlay's layer), or one outside the process's root. No
                // name the process could resolve; only when its root is
                // unknown is the top taken for it, as before. Or more
                // mounts stacked here than are climbed.
                return Climb::Lost {
                    top: root.dentry == 0 && up == mnt,
                };
            }
            at.dentry = read_u64(mnt, cfg.mount_mountpoint);
            at.vfsmnt = up.wrapping_add(cfg.mount_mnt as u64);
        }
    }
    Climb::Lost { top: false }
}

/// Sends the VMA as a `Mapping` when it maps a file executable.
#[inline(always)]
fn send(v: &Vma) {
    if v.flags & VM_EXEC == 0 || v.file == 0 {
        return;
    }
    let cfg = CONFIG.load();
    let Some(mut entry) = reserve::<Mapping>(EventKind::Mapping) else {
        return;
    };
    // SAFETY: reserved memory of the right size; header already set.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let m = &mut ev.payload;
    m.start = v.start;
    m.end = v.end;
    m.pgoff = v.pgoff;
    // SAFETY: fault-checked kernel reads along file -> inode -> sb and
    // the dentry chain; a racing rename yields a stale name, never a fault.
    unsafe {
        let inode = read_u64(v.file, cfg.file_inode);
        m.ino = read_u64(inode, cfg.inode_ino);
        m.generation = read_u32(inode, cfg.inode_generation);
        let sb = read_u64(inode, cfg.inode_sb);
        m.dev = read_u32(sb, cfg.sb_dev);
        // The walk goes up the dentry chain and, at the root of a mount,
        // on from where it is mounted, in the mount it is mounted on (as
        // the kernel's d_path does): /tmp/x/prog on a tmpfs /tmp is not
        // /x/prog. It stops at the process's root (a container's, a
        // chroot's: that dentry on that mount), so names are as the
        // process sees them, like /proc/PID/maps.
        let cross = crosses_mounts();
        let mut at = Place {
            dentry: read_u64(v.file, cfg.file_path + cfg.path_dentry),
            vfsmnt: if cross {
                read_u64(v.file, cfg.file_path + cfg.path_mnt)
            } else {
                0
            },
        };
        let root = if cfg.task_fs != ABSENT && cfg.fs_root != ABSENT {
            let fs = read_u64(bpf_get_current_task_btf() as u64, cfg.task_fs);
            Place {
                dentry: read_u64(fs, cfg.fs_root + cfg.path_dentry),
                vfsmnt: if cross {
                    read_u64(fs, cfg.fs_root + cfg.path_mnt)
                } else {
                    0
                },
            }
        } else {
            Place {
                dentry: 0,
                vfsmnt: 0,
            }
        };
        m.depth = 0;
        m.reached_root = 0;
        // Each turn names one dentry; the last one only looks for the root
        // above the last name.
        for i in 0..MAPPING_NAMES + 1 {
            match climb(&mut at, &root, cross) {
                Climb::Name => {}
                Climb::Root => {
                    m.reached_root = 1;
                    break;
                }
                Climb::Lost { top } => {
                    m.reached_root = top as u32;
                    break;
                }
            }
            let parent = read_u64(at.dentry, cfg.dentry_parent);
            let top = parent == 0 || parent == at.dentry;
            if top && i > 0 {
                // Without mounts known: the root of the file's filesystem,
                // taken for the root as before. With them: a dentry cut
                // off from its parents before its mount's root.
                m.reached_root = !cross as u32;
                break;
            }
            let Some(slot) = m.names.get_mut(i) else {
                break;
            };
            let name = read_u64(at.dentry, cfg.dentry_name + cfg.qstr_name);
            slot[0] = 0;
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, slot);
            m.depth = i as u32 + 1;
            // A file that is its own root (a memfd, other pseudo files) is
            // named by itself.
            if top {
                m.reached_root = 1;
                break;
            }
            at.dentry = parent;
        }
    }
    entry.submit(0);
}

/// A successful mmap (returning `ret`) or mprotect.
#[inline(always)]
pub fn on_success(mmap: bool, ret: u64) {
    // mmap(addr, len, prot, flags, fd, off); mprotect(addr, len, prot).
    let prot = current_user_reg(offset_of!(pt_regs, rdx));
    if prot & PROT_EXEC == 0 || !configured() {
        return;
    }
    let addr = if mmap {
        if current_user_reg(offset_of!(pt_regs, r10)) & MAP_ANONYMOUS != 0 {
            return;
        }
        ret
    } else {
        current_user_reg(offset_of!(pt_regs, rdi))
    };
    if let Some(v) = find(addr) {
        send(&v);
    }
}

/// After exec: the program's text (at mm->start_code) and the ELF
/// interpreter's (its base is AT_BASE in the saved auxiliary vector).
#[inline(always)]
pub fn on_exec() {
    let cfg = CONFIG.load();
    if !configured() || cfg.task_mm == ABSENT || cfg.mm_start_code == ABSENT {
        return;
    }
    // SAFETY: fault-checked kernel reads of the current task's mm.
    let mm = unsafe { read_u64(bpf_get_current_task_btf() as u64, cfg.task_mm) };
    if mm == 0 {
        return;
    }
    // SAFETY: as above.
    let start_code = unsafe { read_u64(mm, cfg.mm_start_code) };
    if let Some(v) = find(start_code) {
        send(&v);
    }
    if cfg.mm_saved_auxv == ABSENT {
        return;
    }
    let mut base = 0;
    for i in 0..AUXV_PAIRS {
        let at = cfg.mm_saved_auxv + (i as u32) * 16;
        // SAFETY: as above; saved_auxv is an array inside mm_struct.
        let key = unsafe { read_u64(mm, at) };
        if key == AT_NULL {
            break;
        }
        if key == AT_BASE {
            // SAFETY: as above.
            base = unsafe { read_u64(mm, at + 8) };
            break;
        }
    }
    // Found first, sent once: each inlined `send` is verified again.
    let mut addr = base;
    for _ in 0..INTERP_VMAS {
        if addr == 0 {
            return;
        }
        let Some(v) = find(addr) else { return };
        if v.flags & VM_EXEC != 0 {
            break;
        }
        addr = v.end;
    }
    if addr != 0 {
        if let Some(v) = find(addr) {
            send(&v);
        }
    }
}
