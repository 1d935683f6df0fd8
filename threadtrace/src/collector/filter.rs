//! `-p` and `--comm`: which processes the console and the dashboard show
//! (the trace file and the metrics keep everything).
use crate::model::Record;

#[derive(Debug, Clone, Default)]
pub struct ProcessFilter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

impl ProcessFilter {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.comms.is_empty()
    }

    pub fn keeps(&self, pid: u32, comm: &str) -> bool {
        (self.pids.is_empty() && self.comms.is_empty())
            || self.pids.contains(&pid)
            || self.comms.iter().any(|c| c == comm)
    }

    pub fn keeps_record(&self, r: &Record) -> bool {
        match r {
            Record::OomKill(e) => {
                self.keeps(e.victim.pid, &e.victim.comm)
                    || self.keeps(e.trigger.pid, &e.trigger.comm)
                    || e.growers.iter().any(|g| self.keeps(g.pid, &g.comm))
            }
            Record::RlimitChange(e) => {
                self.keeps(e.task.pid, &e.task.comm)
                    || self.keeps(e.target_pid, e.target_comm.as_deref().unwrap_or(""))
            }
            r => r.task().is_none_or(|t| self.keeps(t.pid, &t.comm)),
        }
    }
}
