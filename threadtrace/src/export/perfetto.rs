//! Perfetto's native protobuf trace, which ui.perfetto.dev and
//! trace_processor open: a track per process, failures, OOM kills, limit
//! changes and oversubscription as instant events whose debug annotations
//! carry the library, cause and remedy; storms as slices on a child track;
//! a live-thread counter track per process and creating library.
//!
//! Only the messages used are declared, with the field numbers of
//! protos/perfetto/trace/ (tests decode the output with the official
//! protos). Timestamps are the events' wall-clock times in nanoseconds on
//! the trace's default clock: the UI shows them relative to the first.
use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;

use super::timeline::Timeline;

#[derive(Clone, PartialEq, Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    pub counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CounterDescriptor {
    #[prost(string, optional, tag = "6")]
    pub unit_name: Option<String>,
}

/// TrackEvent.Type.
pub const TYPE_SLICE_BEGIN: i32 = 1;
pub const TYPE_SLICE_END: i32 = 2;
pub const TYPE_INSTANT: i32 = 3;
pub const TYPE_COUNTER: i32 = 4;

#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    pub counter_value: Option<i64>,
}

/// One arg. The proto's value is a oneof: exactly one of the value fields
/// is set.
#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(double, optional, tag = "5")]
    pub double_value: Option<f64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "11")]
    pub dict_entries: Vec<DebugAnnotation>,
    #[prost(message, repeated, tag = "12")]
    pub array_values: Vec<DebugAnnotation>,
}

/// All packets come from one writer.
const SEQUENCE: u32 = 1;

/// A JSON value as an annotation; `null` is left out by the caller.
fn annotation(name: Option<String>, v: &Value) -> DebugAnnotation {
    let mut a = DebugAnnotation {
        name,
        ..Default::default()
    };
    match v {
        Value::Null => a.string_value = Some("null".into()),
        Value::Bool(b) => a.bool_value = Some(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                a.uint_value = Some(u);
            } else if let Some(i) = n.as_i64() {
                a.int_value = Some(i);
            } else {
                a.double_value = n.as_f64();
            }
        }
        Value::String(s) => a.string_value = Some(s.clone()),
        Value::Array(items) => {
            a.array_values = items.iter().map(|v| annotation(None, v)).collect();
        }
        Value::Object(m) => {
            a.dict_entries = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| annotation(Some(k.clone()), v))
                .collect();
        }
    }
    a
}

fn annotations(args: &serde_json::Map<String, Value>) -> Vec<DebugAnnotation> {
    args.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| annotation(Some(k.clone()), v))
        .collect()
}

fn descriptor(d: TrackDescriptor) -> TracePacket {
    TracePacket {
        trusted_packet_sequence_id: Some(SEQUENCE),
        track_descriptor: Some(d),
        ..Default::default()
    }
}

fn event(ts_us: u64, e: TrackEvent) -> TracePacket {
    TracePacket {
        timestamp: Some(ts_us.saturating_mul(1000)),
        trusted_packet_sequence_id: Some(SEQUENCE),
        track_event: Some(e),
        ..Default::default()
    }
}

/// Track uuids: processes by pid; child tracks numbered after them.
fn process_uuid(pid: u32) -> u64 {
    u64::from(pid) + 1
}

pub fn render(t: &Timeline) -> Vec<u8> {
    let mut packets = Vec::new();
    let mut next_uuid = 1u64 << 32;
    let mut child = |packets: &mut Vec<TracePacket>, pid: u32, name: String, counter: bool| {
        next_uuid += 1;
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(next_uuid),
            name: Some(name),
            parent_uuid: Some(process_uuid(pid)),
            counter: counter.then(|| CounterDescriptor {
                unit_name: Some("threads".into()),
            }),
            ..Default::default()
        }));
        next_uuid
    };
    // Descriptors first: every event's track is known when it is read.
    for (&pid, name) in &t.processes {
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(process_uuid(pid)),
            process: Some(ProcessDescriptor {
                pid: Some(pid as i32),
                process_name: Some(name.clone()),
            }),
            ..Default::default()
        }));
    }
    let mut storm_tracks = BTreeMap::new();
    for s in &t.spans {
        storm_tracks
            .entry(s.pid)
            .or_insert_with(|| child(&mut packets, s.pid, "thread-creation storms".into(), false));
    }
    let mut counter_tracks = BTreeMap::new();
    for c in &t.counters {
        for lib in c.live.keys() {
            counter_tracks
                .entry((c.pid, lib.clone()))
                .or_insert_with(|| {
                    child(&mut packets, c.pid, format!("live threads: {lib}"), true)
                });
        }
    }
    let mut events = Vec::new();
    for i in &t.instants {
        let mut args = i.args.clone();
        args.insert("tid".into(), i.tid.into());
        events.push(event(
            i.ts_us,
            TrackEvent {
                r#type: Some(TYPE_INSTANT),
                track_uuid: Some(process_uuid(i.pid)),
                categories: vec![i.category.into()],
                name: Some(i.name.clone()),
                debug_annotations: annotations(&args),
                ..Default::default()
            },
        ));
    }
    for s in &t.spans {
        let track = Some(storm_tracks[&s.pid]);
        events.push(event(
            s.ts_us,
            TrackEvent {
                r#type: Some(TYPE_SLICE_BEGIN),
                track_uuid: track,
                categories: vec!["storm".into()],
                name: Some(s.name.clone()),
                debug_annotations: annotations(&s.args),
                ..Default::default()
            },
        ));
        events.push(event(
            s.ts_us + s.dur_us,
            TrackEvent {
                r#type: Some(TYPE_SLICE_END),
                track_uuid: track,
                ..Default::default()
            },
        ));
    }
    for c in &t.counters {
        for (lib, &live) in &c.live {
            events.push(event(
                c.ts_us,
                TrackEvent {
                    r#type: Some(TYPE_COUNTER),
                    track_uuid: Some(counter_tracks[&(c.pid, lib.clone())]),
                    counter_value: Some(live),
                    ..Default::default()
                },
            ));
        }
    }
    // Stable by time: a slice's end never precedes its begin.
    events.sort_by_key(|p| p.timestamp);
    packets.extend(events);
    Trace { packet: packets }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use perfetto_protos::{
        debug_annotation::DebugAnnotation as PbAnnotation, trace::Trace as PbTrace,
        track_event::track_event::Type,
    };
    use protobuf::Message as _;
    use serde_json::json;

    use super::*;
    use crate::export::timeline::{Counter, Instant, Span};

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn incident() -> Timeline {
        let mut t = Timeline::default();
        t.processes.insert(4242, "python3 [4242]".into());
        t.processes.insert(4250, "python3 [4250]".into());
        t.instants.push(Instant {
            pid: 4242,
            tid: 4243,
            ts_us: 1_000_000,
            name: "pthread_create EAGAIN (libopenblas)".into(),
            category: "failure",
            args: args(json!({"library": "libopenblas", "cause": "rlimit_nproc",
                              "remedy": "OPENBLAS_NUM_THREADS=1", "symbol": null,
                              "stack": ["blas_thread_init (libopenblas.so)"]})),
        });
        t.instants.push(Instant {
            pid: 4250,
            tid: 4250,
            ts_us: 3_000_000,
            name: "OOM kill of python3[4250]".into(),
            category: "oom",
            args: args(json!({"rss_bytes": 209_715_200u64,
                              "pool": {"parent_pid": 4242, "siblings_alive": 2}})),
        });
        t.spans.push(Span {
            pid: 4242,
            ts_us: 1_000_000,
            dur_us: 1_500_000,
            name: "storm: 3000 failures".into(),
            args: args(json!({"failures": 3000, "peak_rate_per_s": 2500})),
        });
        t.counters.push(Counter {
            pid: 4242,
            ts_us: 2_000_000,
            live: [("libopenblas".to_string(), 5), ("unattributed".into(), 1)].into(),
        });
        t
    }

    fn arg<'a>(a: &'a [PbAnnotation], name: &str) -> &'a PbAnnotation {
        a.iter()
            .find(|a| a.name() == name)
            .unwrap_or_else(|| panic!("no arg {name}"))
    }

    /// Decoded with the official protos: the tracks, the events on them and
    /// their args are where the UI looks for them.
    #[test]
    fn decodes_with_the_official_protos() {
        let bytes = render(&incident());
        let trace = PbTrace::parse_from_bytes(&bytes).expect("a valid perfetto.protos.Trace");
        let tracks: Vec<_> = trace
            .packet
            .iter()
            .filter(|p| p.has_track_descriptor())
            .map(|p| p.track_descriptor())
            .collect();
        let blas = tracks
            .iter()
            .find(|t| t.process.pid() == 4242)
            .expect("a process track");
        assert_eq!(blas.process.process_name(), "python3 [4242]");
        let counter = tracks
            .iter()
            .find(|t| t.name() == "live threads: libopenblas")
            .expect("a counter track per library");
        assert!(counter.counter.is_some());
        assert_eq!(counter.parent_uuid(), blas.uuid());
        let storms = tracks
            .iter()
            .find(|t| t.name() == "thread-creation storms")
            .unwrap();

        let events: Vec<_> = trace
            .packet
            .iter()
            .filter(|p| p.has_track_event())
            .collect();
        assert!(events.iter().all(|p| p.trusted_packet_sequence_id() == 1));
        let failure = events
            .iter()
            .find(|p| p.track_event().type_() == Type::TYPE_INSTANT)
            .unwrap();
        assert_eq!(failure.timestamp(), 1_000_000_000);
        let e = failure.track_event();
        assert_eq!(e.track_uuid(), blas.uuid());
        assert_eq!(e.name(), "pthread_create EAGAIN (libopenblas)");
        assert_eq!(e.categories, ["failure"]);
        let a = &e.debug_annotations;
        assert_eq!(arg(a, "library").string_value(), "libopenblas");
        assert_eq!(arg(a, "cause").string_value(), "rlimit_nproc");
        assert_eq!(arg(a, "remedy").string_value(), "OPENBLAS_NUM_THREADS=1");
        assert_eq!(arg(a, "tid").uint_value(), 4243);
        assert_eq!(arg(a, "stack").array_values.len(), 1);
        assert!(a.iter().all(|a| a.name() != "symbol"), "nulls are left out");

        let oom = events
            .iter()
            .find(|p| p.track_event().name() == "OOM kill of python3[4250]")
            .unwrap()
            .track_event();
        assert_eq!(oom.track_uuid(), 4251);
        let pool = arg(&oom.debug_annotations, "pool");
        assert_eq!(arg(&pool.dict_entries, "siblings_alive").uint_value(), 2);

        let slice: Vec<_> = events
            .iter()
            .filter(|p| p.track_event().track_uuid() == storms.uuid())
            .map(|p| (p.track_event().type_(), p.timestamp()))
            .collect();
        assert_eq!(
            slice,
            [
                (Type::TYPE_SLICE_BEGIN, 1_000_000_000),
                (Type::TYPE_SLICE_END, 2_500_000_000)
            ]
        );
        let live = events
            .iter()
            .find(|p| p.track_event().track_uuid() == counter.uuid())
            .unwrap();
        assert_eq!(live.track_event().type_(), Type::TYPE_COUNTER);
        assert_eq!(live.track_event().counter_value(), 5);
    }

    #[test]
    fn an_empty_timeline_is_an_empty_trace() {
        let trace = PbTrace::parse_from_bytes(&render(&Timeline::default())).unwrap();
        assert!(trace.packet.is_empty());
    }
}
