//! The end-to-end tests a guest runs: built on the host, listed there,
//! run inside one at a time with a timeout each, and their results read
//! back from the guest's console.
use std::{collections::BTreeMap, path::PathBuf, process::Command};

use anyhow::{bail, Result};

use super::guest::shell_quote;
use crate::{output, root_dir};

/// The incident scenarios `cargo xtask test` runs in a cgroup v2 guest of
/// Debian 12's kernel: RLIMIT_NPROC, pids cgroups, OOM kills (one, a pool
/// worker's, a memory.oom.group's), the thread stack that cannot be
/// mapped, and what differs on v2 (cpu.max, pod paths, growers, a program
/// on a mount other than the root).
pub const SCENARIOS: &[&str] = &[
    "cli::doctor_passes_here",
    "thread_failures::openmp_under_rlimit_nproc",
    "thread_failures::pids_cgroup_limit",
    "thread_failures::thread_stack_cannot_be_mapped",
    "diagnosis::cgroup_pids_limit",
    "diagnosis::stack_alloc_under_rlimit_as",
    "diagnosis::oversubscription_against_a_cpu_quota",
    "oom_kill::oom_kill_in_a_memory_cgroup",
    "oom_kill::oom_killed_pool_worker_leaves_its_parent_waiting",
    "oom_kill::oom_group_kill_tells_the_chosen_victim_from_those_killed_with_it",
    "oom_growers::the_largest_is_killed_but_another_grew",
    "kubernetes::pods_are_named_from_cgroups_log_directories_and_hostnames",
    // $TMPDIR is a mount of its own in the guest: names cross mounts.
    "attribution::a_program_calling_pthread_create_is_named_by_its_executable",
];

/// A test: its executable and its name within it.
#[derive(Clone, Debug)]
pub struct Test {
    pub binary: String,
    pub exe: PathBuf,
    pub name: String,
}

impl Test {
    pub fn id(&self) -> String {
        format!("{}::{}", self.binary, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Result1 {
    pub id: String,
    /// pass, fail, timeout, or "not run".
    pub verdict: String,
    pub seconds: u64,
    /// The panic message of a failure, one line.
    pub reason: String,
}

/// Builds the end-to-end test executables and lists their tests.
pub fn all_tests() -> Result<Vec<Test>> {
    let json = output(Command::new("cargo").current_dir(root_dir()).args([
        "test",
        "--release",
        "--package",
        "threadtrace-e2e",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut exes = BTreeMap::new();
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) {
            if v["profile"]["test"] == true && v["target"]["kind"][0] == "test" {
                exes.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    let mut tests = Vec::new();
    for (binary, exe) in exes {
        let list = output(Command::new(&exe).args(["--list", "--format", "terse"]))?;
        for name in list.lines().filter_map(|l| l.strip_suffix(": test")) {
            tests.push(Test {
                binary: binary.clone(),
                exe: exe.clone(),
                name: name.to_string(),
            });
        }
    }
    if tests.is_empty() {
        bail!("cargo listed no end-to-end tests");
    }
    Ok(tests)
}

/// The tests that `wanted` names: `binary::test`, or a whole `binary`.
pub fn select(all: &[Test], wanted: &[String]) -> Result<Vec<Test>> {
    let mut out = Vec::new();
    for w in wanted {
        let found: Vec<&Test> = all
            .iter()
            .filter(|t| t.id() == *w || t.binary == *w)
            .collect();
        if found.is_empty() {
            bail!("no end-to-end test or test file is named {w}");
        }
        out.extend(found.into_iter().cloned());
    }
    Ok(out)
}

/// The guest's script: each test alone with `per_test` seconds, a result
/// line each, the tail of a failure's output, and any tracer it left
/// behind killed before the next.
pub fn script(tests: &[Test], per_test: u64) -> String {
    let mut s = String::from(RUNNER);
    if tests.iter().any(|t| t.name.contains("pypi")) {
        // numpy's PyPI wheel cannot be fetched without a network: the
        // host's copy, into the guest's own tmpfs (through the /tmp
        // overlay its files are not the ones mapped: they are refused).
        s.push_str("cp -a /tmp/threadtrace-e2e-pypi-numpy \"$TMPDIR/\"\n");
    }
    for t in tests {
        s.push_str(&format!(
            "one {} {} {} {per_test}\n",
            shell_quote(&t.id()),
            shell_quote(&t.exe.to_string_lossy()),
            shell_quote(&t.name)
        ));
    }
    s.push_str("exit $failed\n");
    s
}

const RUNNER: &str = r#"failed=0
one() {
  local id=$1 exe=$2 name=$3 per=$4 log="$TMPDIR/test.log" t0 rc verdict reason=""
  t0=$(date +%s)
  timeout -k 10 "$per" "$exe" --exact "$name" --test-threads=1 > "$log" 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q '1 passed' "$log"; then verdict=pass
  elif [ $rc = 124 ] || [ $rc = 137 ]; then verdict=timeout; failed=1
  else
    verdict=fail; failed=1
    reason=$(grep -A1 -m1 'panicked at' "$log" | tail -1 | tr -d '\t' | cut -c1-200)
    echo "---- $id: last lines of its output"
    tail -150 "$log" | cut -c1-300 | sed 's/^/  | /'
  fi
  echo "@@threadtrace-vm result $id $verdict $(( $(date +%s) - t0 )) $reason"
  for e in /proc/[0-9]*/exe; do
    [ "$e" -ef "$THREADTRACE_BIN" ] && { p=${e#/proc/}; kill -KILL "${p%/exe}" 2>/dev/null; }
  done
  return 0
}
"#;

/// The results the guest reported, in its order; tests it never got to
/// are "not run".
pub fn results(said: &[String], tests: &[Test]) -> Vec<Result1> {
    let mut got: BTreeMap<String, Result1> = BTreeMap::new();
    for line in said {
        let Some(rest) = line.strip_prefix("result ") else {
            continue;
        };
        let mut parts = rest.splitn(4, ' ');
        let (Some(id), Some(verdict), Some(secs)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        got.insert(
            id.to_string(),
            Result1 {
                id: id.to_string(),
                verdict: verdict.to_string(),
                seconds: secs.parse().unwrap_or(0),
                reason: parts.next().unwrap_or("").trim().to_string(),
            },
        );
    }
    tests
        .iter()
        .map(|t| {
            got.remove(&t.id()).unwrap_or(Result1 {
                id: t.id(),
                verdict: "not run".into(),
                seconds: 0,
                reason: String::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(binary: &str, name: &str) -> Test {
        Test {
            binary: binary.into(),
            exe: PathBuf::from(format!("/x/deps/{binary}-0123")),
            name: name.into(),
        }
    }

    #[test]
    fn a_test_is_named_alone_or_by_its_file() {
        let all = [t("cli", "a"), t("cli", "b"), t("oom_kill", "c")];
        let ids = |w: &[&str]| {
            select(&all, &w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|v| v.iter().map(Test::id).collect::<Vec<_>>())
        };
        assert_eq!(ids(&["cli"]).unwrap(), ["cli::a", "cli::b"]);
        assert_eq!(ids(&["oom_kill::c"]).unwrap(), ["oom_kill::c"]);
        assert!(ids(&["oom_kill::d"]).is_err());
    }

    #[test]
    fn results_are_read_back_and_missing_ones_are_not_run() {
        let tests = [t("cli", "a"), t("cli", "b"), t("cli", "c")];
        let said = [
            "kernel 6.1.0-57-amd64".to_string(),
            "result cli::a pass 12 ".into(),
            "result cli::b fail 3 assertion `left == right` failed".into(),
        ];
        let r = results(&said, &tests);
        assert_eq!(r[0].verdict, "pass");
        assert_eq!(r[0].seconds, 12);
        assert_eq!(r[1].verdict, "fail");
        assert_eq!(r[1].reason, "assertion `left == right` failed");
        assert_eq!(r[2].verdict, "not run");
    }

    #[test]
    fn the_runner_reports_with_the_mark() {
        assert!(RUNNER.contains(&format!("{}result ", super::super::guest::MARK)));
        let s = script(&[t("cli", "it's")], 90);
        assert!(
            s.contains(r"one 'cli::it'\''s' '/x/deps/cli-0123' 'it'\''s' 90"),
            "{s}"
        );
    }
}
