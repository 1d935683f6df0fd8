//! One module per kernel hook.
mod cgroup_attach;
mod clone;
mod mapping;
mod oom_mark_victim;
mod process_exec;
mod process_exit;
mod process_fork;
mod rlimit;
mod stack_alloc;
