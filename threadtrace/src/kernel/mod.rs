//! Loading and attaching the kernel programs (threadtrace-ebpf): syscall,
//! task and OOM tracepoints, and, where the kernel allows it, fexit (and
//! fentry) on the kernel functions behind clone, mmap and setrlimit instead
//! of their syscall tracepoints (`attach`). Nothing is attached to a library, so every libc
//! of every container is covered from its first instruction, and a call
//! that succeeds costs a compare.
pub mod attach;
pub mod btf;
pub mod counters;
pub mod decode;
pub mod mappings;
pub mod tracefs;

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{FEntry, FExit, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use threadtrace_common::{Config, ABSENT, START_ROUTINE_SLOTS};

use crate::model::HookAttach;

/// (program, category, tracepoint). Every one is required: without it a
/// class of failure would go unseen, and we say so rather than run blind.
/// The hooks that may use fexit instead have theirs in `attach::HOOKS`.
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("oom_mark_victim", "oom", "mark_victim"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("cgroup_attach_task", "cgroup", "cgroup_attach_task"),
];

/// Attached raw (the program gets the tracepoint's arguments, the kernel
/// fills no record first): these run for every thread of the host.
pub const RAW_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("{what}: {source}")]
    Program {
        what: String,
        source: aya::programs::ProgramError,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error(
        "{what}: perf_event_open refused (EACCES): kernel.perf_event_paranoid is {paranoid}, \
         and Debian's and Ubuntu's kernels then allow perf_event_open only with CAP_SYS_ADMIN: \
         give threadtrace CAP_SYS_ADMIN (it drops it once attached), or \
         `sysctl kernel.perf_event_paranoid=2`"
    )]
    PerfParanoid { what: String, paranoid: i32 },
}

/// An attach refused by perf_event_open with EACCES while
/// kernel.perf_event_paranoid is above 2 and CAP_SYS_ADMIN is not held:
/// Debian's and Ubuntu's kernels carry a patch that then asks for
/// CAP_SYS_ADMIN where upstream asks for CAP_PERFMON, and aya's words for
/// it ("Permission denied") would leave a unit with CAP_PERFMON puzzled.
fn attach_error(what: String, source: aya::programs::ProgramError) -> KernelError {
    use crate::privileges::{effective_caps, CAP_SYS_ADMIN};
    let eacces = matches!(&source, aya::programs::ProgramError::SyscallError(s)
        if s.io_error.raw_os_error() == Some(13));
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    match paranoid {
        Some(paranoid)
            if eacces && paranoid > 2 && effective_caps() & (1 << CAP_SYS_ADMIN) == 0 =>
        {
            KernelError::PerfParanoid { what, paranoid }
        }
        _ => KernelError::Program { what, source },
    }
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/threadtrace"));

/// Offsets the programs need, from this kernel's format files and BTF.
pub fn build_config() -> Result<Config, KernelError> {
    let oom = tracefs::field_offsets("oom", "mark_victim")?;
    let exit = tracefs::field_offsets("sched", "sched_process_exit")?;
    let get =
        |m: &std::collections::HashMap<String, u32>, k: &str| m.get(k).copied().unwrap_or(ABSENT);
    let btf = btf::Btf::from_sys()
        .map_err(|e| log::warn!("no BTF ({e}): exit codes and old limits will be missing"))
        .ok();
    let member = |s: &str, m: &str| {
        btf.as_ref()
            .and_then(|b| b.member_offset(s, m))
            .unwrap_or(ABSENT)
    };
    Ok(Config {
        oom_comm: get(&oom, "comm"),
        oom_total_vm: get(&oom, "total_vm"),
        oom_anon_rss: get(&oom, "anon_rss"),
        oom_file_rss: get(&oom, "file_rss"),
        oom_shmem_rss: get(&oom, "shmem_rss"),
        oom_uid: get(&oom, "uid"),
        oom_score_adj: get(&oom, "oom_score_adj"),
        exit_group_dead: get(&exit, "group_dead"),
        task_exit_code: member("task_struct", "exit_code"),
        task_signal: member("task_struct", "signal"),
        signal_nr_threads: member("signal_struct", "nr_threads"),
        signal_rlim: member("signal_struct", "rlim"),
        task_real_cred: member("task_struct", "real_cred"),
        cred_ucounts: member("cred", "ucounts"),
        ucounts_rlimit: member("ucounts", "rlimit"),
        detail_per_sec: 0,
        task_utask: member("task_struct", "utask"),
        utask_return_instances: member("uprobe_task", "return_instances"),
        ri_stack: member("return_instance", "stack"),
        ri_orig_ret_vaddr: member("return_instance", "orig_ret_vaddr"),
        ri_next: member("return_instance", "next"),
        vma_start: member("vm_area_struct", "vm_start"),
        vma_end: member("vm_area_struct", "vm_end"),
        vma_pgoff: member("vm_area_struct", "vm_pgoff"),
        vma_file: member("vm_area_struct", "vm_file"),
        vma_flags: member("vm_area_struct", "vm_flags"),
        file_inode: member("file", "f_inode"),
        file_path: member("file", "f_path"),
        path_dentry: member("path", "dentry"),
        dentry_name: member("dentry", "d_name"),
        dentry_parent: member("dentry", "d_parent"),
        qstr_name: member("qstr", "name"),
        inode_ino: member("inode", "i_ino"),
        inode_generation: member("inode", "i_generation"),
        inode_sb: member("inode", "i_sb"),
        sb_dev: member("super_block", "s_dev"),
        task_mm: member("task_struct", "mm"),
        mm_start_code: member("mm_struct", "start_code"),
        mm_saved_auxv: member("mm_struct", "saved_auxv"),
        task_fs: member("task_struct", "fs"),
        fs_root: member("fs_struct", "root"),
        task_pid: member("task_struct", "pid"),
        task_tgid: member("task_struct", "tgid"),
        path_mnt: member("path", "mnt"),
        mount_mnt: member("mount", "mnt"),
        mount_parent: member("mount", "mnt_parent"),
        mount_mountpoint: member("mount", "mnt_mountpoint"),
        vfsmount_root: member("vfsmount", "mnt_root"),
    })
}

/// The kernel structure members the mapping probe needs and BTF did not
/// give: without the first ones it sends no mappings; without
/// task_struct.fs and fs_struct.root names are as the host's root sees
/// them; without the mount ones (path.mnt on) a name stops at the root of
/// the file's own mount (`/x/prog` for /tmp/x/prog on a tmpfs /tmp).
pub fn missing_mapping_offsets(c: &Config) -> Vec<&'static str> {
    [
        ("vm_area_struct.vm_start", c.vma_start),
        ("vm_area_struct.vm_end", c.vma_end),
        ("vm_area_struct.vm_pgoff", c.vma_pgoff),
        ("vm_area_struct.vm_file", c.vma_file),
        ("vm_area_struct.vm_flags", c.vma_flags),
        ("file.f_inode", c.file_inode),
        ("file.f_path", c.file_path),
        ("path.dentry", c.path_dentry),
        ("dentry.d_name", c.dentry_name),
        ("dentry.d_parent", c.dentry_parent),
        ("qstr.name", c.qstr_name),
        ("inode.i_ino", c.inode_ino),
        ("inode.i_generation", c.inode_generation),
        ("inode.i_sb", c.inode_sb),
        ("super_block.s_dev", c.sb_dev),
        ("task_struct.mm", c.task_mm),
        ("mm_struct.start_code", c.mm_start_code),
        ("mm_struct.saved_auxv", c.mm_saved_auxv),
        ("task_struct.fs", c.task_fs),
        ("fs_struct.root", c.fs_root),
        ("path.mnt", c.path_mnt),
        ("mount.mnt", c.mount_mnt),
        ("mount.mnt_parent", c.mount_parent),
        ("mount.mnt_mountpoint", c.mount_mountpoint),
        ("vfsmount.mnt_root", c.vfsmount_root),
    ]
    .into_iter()
    .filter(|&(_, off)| off == ABSENT)
    .map(|(name, _)| name)
    .collect()
}

/// Every tracepoint the programs may attach to: what `doctor` checks.
pub fn all_tracepoints() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)>
{
    attach::HOOKS
        .iter()
        .flat_map(|h| h.tracepoints)
        .chain(TRACEPOINTS)
        .chain(RAW_TRACEPOINTS)
}

pub struct Kernel {
    pub ebpf: Ebpf,
    /// What is attached, for the `started` line and `doctor`.
    pub attached: Vec<String>,
    /// How each hook of `attach::HOOKS` is attached, and why not fexit.
    pub attach: Vec<HookAttach>,
    /// start_routine offsets the kernel reads at, slot by slot (0: free).
    offsets: Array<MapData, u32>,
    pub offsets_in_use: Vec<u32>,
}

impl Kernel {
    /// Loads the programs and attaches every hook: fexit where the kernel
    /// allows it (and `fexit` is true), the tracepoints otherwise.
    /// `log_level` is aya-log's level for kernel-side messages (0 = off);
    /// `detail_rate` the failure events with stacks per process, CPU and
    /// second (0: all).
    pub fn load(log_level: u8, detail_rate: u32, fexit: bool) -> Result<Self, KernelError> {
        tracefs::ensure_mounted()?;
        let config = Config {
            detail_per_sec: detail_rate,
            ..build_config()?
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(EBPF_OBJECT)?;
        let mut attached = Vec::new();
        let mut hooks = Vec::new();
        let btf = if fexit {
            aya::Btf::from_sys_fs().map_err(|e| {
                log::debug!("no kernel BTF for fexit ({e}): syscall tracepoints instead");
                attach::Refusal::NoBtf
            })
        } else {
            Err(attach::Refusal::TurnedOff)
        };
        for hook in attach::HOOKS {
            let fexit = btf
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|btf| attach_trampolines(&mut ebpf, hook, btf));
            let function = hook.fexit.1;
            match &fexit {
                Ok(()) => {
                    log::info!("{}: fexit {function}", hook.name);
                    if hook.fentry.is_some() {
                        attached.push(format!("fentry:{function}"));
                    }
                    attached.push(format!("fexit:{function}"));
                }
                Err(why) => {
                    log::info!(
                        "{}: fexit {function} {}; syscall tracepoints instead",
                        hook.name,
                        why.words(function)
                    );
                    attach_tracepoints(&mut ebpf, hook.tracepoints, &mut attached)?;
                }
            }
            hooks.push(attach::choice(hook, fexit.err().as_ref()));
        }
        attach_tracepoints(&mut ebpf, TRACEPOINTS, &mut attached)?;
        for &(prog, category, name) in RAW_TRACEPOINTS {
            let what = || format!("raw tracepoint {name}");
            let err = |source| KernelError::Program {
                what: what(),
                source,
            };
            let p: &mut RawTracePoint = ebpf
                .program_mut(prog)
                .ok_or(KernelError::MissingProgram(prog))?
                .try_into()
                .map_err(err)?;
            p.load().map_err(err)?;
            p.attach(name).map_err(err)?;
            attached.push(format!("{category}:{name} (raw)"));
        }
        let map = ebpf.take_map("PTHREAD_OFFSETS").ok_or(KernelError::Map(
            "PTHREAD_OFFSETS",
            aya::maps::MapError::InvalidName {
                name: "PTHREAD_OFFSETS".into(),
            },
        ))?;
        let offsets = Array::try_from(map).map_err(|e| KernelError::Map("PTHREAD_OFFSETS", e))?;
        Ok(Kernel {
            ebpf,
            attached,
            attach: hooks,
            offsets,
            offsets_in_use: Vec::new(),
        })
    }

    /// Has the kernel read start_routine at `offset` too (a libc build not
    /// seen before). Returns false when every slot is taken.
    pub fn add_start_routine_offset(&mut self, offset: u32) -> bool {
        if offset == 0 || self.offsets_in_use.contains(&offset) {
            return true;
        }
        let slot = self.offsets_in_use.len();
        if slot >= START_ROUTINE_SLOTS {
            return false;
        }
        match self.offsets.set(slot as u32, offset, 0) {
            Ok(()) => {
                self.offsets_in_use.push(offset);
                true
            }
            Err(e) => {
                log::debug!("PTHREAD_OFFSETS[{slot}] = {offset}: {e}");
                false
            }
        }
    }

    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<aya::maps::MapData>, KernelError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(KernelError::Map(
            "EVENTS",
            aya::maps::MapError::InvalidName {
                name: "EVENTS".into(),
            },
        ))?;
        RingBuf::try_from(map).map_err(|e| KernelError::Map("EVENTS", e))
    }
}

/// Loads program `$prog` of type `$ty` at `$function` and attaches it;
/// unloads it when the attach fails. FEntry and FExit share no trait.
macro_rules! trampoline {
    ($ebpf:expr, $ty:ty, $prog:expr, $function:expr, $btf:expr) => {{
        let kind = stringify!($ty);
        (|| {
            let p: &mut $ty = $ebpf
                .program_mut($prog)
                .ok_or_else(|| attach::Refusal::Other(format!("no program {}", $prog)))?
                .try_into()
                .map_err(|e| attach::Refusal::of(&e, false))?;
            if let Err(e) = p.load($function, $btf) {
                if let aya::programs::ProgramError::LoadError { verifier_log, .. } = &e {
                    log::debug!("{kind} {}: the verifier said: {verifier_log}", $function);
                }
                return Err(attach::Refusal::of(&e, false));
            }
            if let Err(e) = p.attach() {
                if let Err(e) = p.unload() {
                    log::debug!("{kind} {}: unloading after a refusal: {e}", $function);
                }
                return Err(attach::Refusal::of(&e, true));
            }
            Ok(())
        })()
    }};
}

/// Loads and attaches `hook`'s fentry (if any) and fexit programs; on any
/// refusal unloads what was loaded, so that nothing of them stays and the
/// tracepoints alone record the hook.
fn attach_trampolines(
    ebpf: &mut Ebpf,
    hook: &attach::Hook,
    btf: &aya::Btf,
) -> Result<(), attach::Refusal> {
    let (fexit, function) = hook.fexit;
    if let Some(prog) = hook.fentry {
        trampoline!(ebpf, FEntry, prog, function, btf)?;
    }
    let result = trampoline!(ebpf, FExit, fexit, function, btf);
    if result.is_err() {
        if let Some(p) = hook
            .fentry
            .and_then(|prog| ebpf.program_mut(prog))
            .and_then(|p| <&mut FEntry>::try_from(p).ok())
        {
            if let Err(e) = p.unload() {
                log::debug!("fentry {function}: unloading after a refusal: {e}");
            }
        }
    }
    result
}

/// Loads and attaches each (program, category, tracepoint); every one is
/// required.
fn attach_tracepoints(
    ebpf: &mut Ebpf,
    tracepoints: &[(&'static str, &str, &str)],
    attached: &mut Vec<String>,
) -> Result<(), KernelError> {
    for &(prog, category, name) in tracepoints {
        let what = || format!("tracepoint {category}:{name}");
        let p: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or(KernelError::MissingProgram(prog))?
            .try_into()
            .map_err(|source| KernelError::Program {
                what: what(),
                source,
            })?;
        p.load().map_err(|source| KernelError::Program {
            what: what(),
            source,
        })?;
        p.attach(category, name)
            .map_err(|source| attach_error(what(), source))?;
        attached.push(format!("{category}:{name}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_offsets_are_listed_when_missing() {
        let all = Config::default();
        assert!(missing_mapping_offsets(&all).is_empty());
        let c = Config {
            path_mnt: ABSENT,
            mount_mnt: ABSENT,
            mount_parent: ABSENT,
            mount_mountpoint: ABSENT,
            vfsmount_root: ABSENT,
            ..all
        };
        assert_eq!(
            missing_mapping_offsets(&c),
            [
                "path.mnt",
                "mount.mnt",
                "mount.mnt_parent",
                "mount.mnt_mountpoint",
                "vfsmount.mnt_root"
            ]
        );
    }
}
