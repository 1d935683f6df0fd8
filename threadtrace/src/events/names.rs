//! Names for the numbers the kernel reports.

/// errno as its symbolic name; unknown ones as their number.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        24 => "EMFILE",
        28 => "ENOSPC",
        38 => "ENOSYS",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// What an SRE should read into the errno of a thread-creation failure.
pub fn errno_meaning(errno: i32) -> &'static str {
    match errno {
        11 => "a limit on tasks was hit (RLIMIT_NPROC, cgroup pids.max, threads-max) or the thread stack could not be mapped",
        12 => "the kernel could not allocate memory for the new task",
        1 => "not permitted (seccomp or a security module)",
        22 => "invalid flags or attributes",
        38 => "the syscall is not available (old kernel or seccomp)",
        _ => "",
    }
}

const RESOURCES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

pub fn resource_name(resource: u32) -> String {
    RESOURCES
        .get(resource as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("RLIMIT_{resource}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(11), "EAGAIN");
        assert_eq!(errno_name(999), "E999");
        assert_eq!(resource_name(6), "RLIMIT_NPROC");
        assert_eq!(resource_name(9), "RLIMIT_AS");
        assert_eq!(resource_name(40), "RLIMIT_40");
    }
}
