//! The near tier's bookkeeping, without Redis: fills against invalidations and flushes, pushes,
//! the lease.

use super::*;

fn shared() -> Shared {
    let s = Shared::new(1 << 20, "p:".into(), Duration::from_secs(60));
    s.up();
    s
}

fn key(name: &str) -> CacheKey {
    CacheKey::from_stored(name)
}

fn disconnection() -> PushInfo {
    PushInfo {
        kind: PushKind::Disconnection,
        data: Vec::new(),
    }
}

fn blob(text: &'static str) -> bytes::Bytes {
    bytes::Bytes::from_static(text.as_bytes())
}

#[test]
fn an_invalidation_while_a_fill_is_in_flight_discards_the_fill() {
    let s = shared();
    let stamp = s.stamp(&key("k"));
    s.invalidate(&key("k")); // arrives while the GET is in flight
    s.fill(key("k"), blob("old"), None, stamp);
    assert_eq!(s.lookup(&key("k"), usize::MAX), None);
    // Another key's invalidation leaves the fill alone (unless they share a stripe).
    let stamp = s.stamp(&key("a"));
    let other = (0..10_000)
        .map(|i| key(&format!("b{i}")))
        .find(|b| !std::ptr::eq(s.stripe(b), s.stripe(&key("a"))))
        .unwrap();
    s.invalidate(&other);
    s.fill(key("a"), blob("fresh"), None, stamp);
    assert_eq!(s.lookup(&key("a"), usize::MAX), Some(blob("fresh")));
}

#[test]
fn a_flush_while_a_fill_is_in_flight_discards_it() {
    let s = shared();
    let stamp = s.stamp(&key("k"));
    s.flush("local");
    s.fill(key("k"), blob("old"), None, stamp);
    assert_eq!(s.lookup(&key("k"), usize::MAX), None);
}

#[test]
fn pushes_invalidate_keys_of_the_namespace_and_a_nil_flushes() {
    let s = shared();
    for k in ["a", "b"] {
        s.fill(key(k), blob("v"), None, s.stamp(&key(k)));
    }
    s.push(
        0,
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![
                Value::BulkString(b"p:a".to_vec()),
                Value::BulkString(b"other:b".to_vec()),
                Value::BulkString(vec![b'p', b':', 0xff]),
            ])],
        },
    );
    assert_eq!(s.lookup(&key("a"), usize::MAX), None);
    assert_eq!(s.lookup(&key("b"), usize::MAX), Some(blob("v")));
    s.push(
        0,
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        },
    );
    assert_eq!(s.lookup(&key("b"), usize::MAX), None);
}

#[test]
fn only_the_current_connection_s_disconnection_stops_serving() {
    let s = shared();
    s.connection.store(2, SeqCst);
    s.fill(key("k"), blob("v"), None, s.stamp(&key("k")));
    s.push(1, disconnection());
    assert!(s.serving_now(), "an old connection's end is not this one's");
    assert!(s.lookup(&key("k"), usize::MAX).is_some());
    s.push(2, disconnection());
    assert!(!s.serving_now());
    assert_eq!(s.lookup(&key("k"), usize::MAX), None, "emptied");
    // Not serving: a fill is refused.
    s.fill(key("k"), blob("v"), None, s.stamp(&key("k")));
    assert_eq!(s.lookup(&key("k"), usize::MAX), None);
}

#[test]
fn the_lease_lapses_without_heartbeats() {
    let s = Shared::new(1 << 20, "p:".into(), Duration::from_millis(5));
    s.up();
    assert!(s.serving_now());
    std::thread::sleep(Duration::from_millis(6));
    assert!(!s.serving_now(), "no heartbeat answered for max_staleness");
}

#[test]
fn a_larger_blob_than_asked_for_is_not_served() {
    let s = shared();
    s.fill(key("k"), blob("0123456789"), None, s.stamp(&key("k")));
    assert_eq!(s.lookup(&key("k"), 9), None);
    assert!(s.lookup(&key("k"), 10).is_some());
}

#[test]
fn trackinginfo_answers_are_read_in_both_protocols() {
    use super::tracking::broadcast_on;
    let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
    let resp3 = Value::Map(vec![
        (
            bulk("flags"),
            Value::Set(vec![
                Value::SimpleString("on".into()),
                Value::SimpleString("bcast".into()),
            ]),
        ),
        (bulk("redirect"), Value::Int(-1)),
        (bulk("prefixes"), Value::Array(vec![bulk("hcc:")])),
    ]);
    assert!(broadcast_on(&resp3));
    let off = Value::Map(vec![
        (
            bulk("flags"),
            Value::Set(vec![Value::SimpleString("off".into())]),
        ),
        (bulk("redirect"), Value::Int(-1)),
        // A prefix named "bcast" is not a flag.
        (bulk("prefixes"), Value::Array(vec![bulk("bcast")])),
    ]);
    assert!(!broadcast_on(&off));
    let resp2 = Value::Array(vec![
        bulk("flags"),
        Value::Array(vec![bulk("on"), bulk("bcast")]),
        bulk("redirect"),
        Value::Int(-1),
    ]);
    assert!(broadcast_on(&resp2));
    assert!(!broadcast_on(&Value::Nil));
    assert!(!broadcast_on(&Value::Array(vec![bulk("flags")])));
}

#[cfg(feature = "redis-cluster")]
#[test]
fn cluster_nodes_answers_give_the_live_primaries() {
    use super::tracking::primaries_in;
    let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4.example replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003,host-3.example master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 1426238316232 1426238315000 5 disconnected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master - 0 1426238316232 6 connected
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa :0@0 master,noaddr - 0 0 0 disconnected
garbage line
";
    let mut found = primaries_in(text);
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<(&str, &str, u16, u32)> = found
        .iter()
        .map(|p| (&p.id[..4], p.host.as_str(), p.port, p.slots))
        .collect();
    assert_eq!(
        ids,
        [
            // The announced hostname is not used: clients are told the IP by default.
            ("292f", "127.0.0.1", 30003, 5461),
            ("67ed", "127.0.0.1", 30002, 5462),
            // A primary without slots yet counts: a resharding moves keys to it.
            ("824f", "127.0.0.1", 30006, 0),
            ("e7d1", "127.0.0.1", 30001, 5461),
        ]
    );
    assert_eq!(found.iter().map(|p| p.slots).sum::<u32>(), 16384);
    // A slot being migrated is listed in brackets, and not counted twice.
    let migrating = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]\n";
    assert_eq!(primaries_in(migrating)[0].slots, 5461);
}
