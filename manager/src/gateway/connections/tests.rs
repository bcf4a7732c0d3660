//! Unit tests of the connection caps, eviction, timers and open-file fitting, on a paused
//! clock where time matters.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const AGE: Duration = Duration::from_secs(300);

fn limits(total: usize, per: usize, idle: Duration) -> (ConnectionLimits, Metrics) {
    let metrics = Metrics::new();
    let settings =
        Settings { max_total: total, max_per_address: per, idle, max_age: AGE, sessions: SessionCaps::NONE };
    (ConnectionLimits::new(settings, &metrics), metrics)
}

fn state_of(slot: &Slot) -> u8 {
    slot.state()
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `elapsed` is `secs` on the paused clock (timers round up to the millisecond).
fn within(elapsed: Duration, secs: u64) -> bool {
    let at = Duration::from_secs(secs);
    elapsed >= at && elapsed < at + Duration::from_millis(50)
}

#[test]
fn caps_per_address_and_in_total() {
    let (l, m) = limits(4, 2, Duration::from_secs(30));
    let a1 = l.admit(peer("10.0.0.1:1000")).unwrap();
    let a2 = l.admit(peer("10.0.0.1:1001")).unwrap();
    assert_eq!(l.admit(peer("10.0.0.1:1002")).unwrap_err(), Cap::PerAddress);
    let b1 = l.admit(peer("10.0.0.2:1000")).unwrap();
    // One /64 is one address.
    let c1 = l.admit(peer("[2001:db8::1]:1000")).unwrap();
    assert_eq!(m.unauthenticated_connections.get(), 4);
    assert_eq!(m.connections_evicted.get(), 0);
    drop(a1);
    assert_eq!(l.open(), 3);
    assert!(l.admit(peer("10.0.0.1:1003")).is_ok(), "a closed connection frees its slot");
    drop((a2, b1, c1));
    let c2 = l.admit(peer("[2001:db8::2]:1000")).unwrap();
    let c3 = l.admit(peer("[2001:db8::ffff]:1000")).unwrap();
    assert_eq!(l.admit(peer("[2001:db8::3]:1000")).unwrap_err(), Cap::PerAddress);
    assert!(l.admit(peer("[2001:db8:0:1::3]:1000")).is_ok(), "another /64");
    drop((c2, c3));
    assert_eq!(l.open(), 0);
    assert_eq!(m.unauthenticated_connections.get(), 0);
}

#[test]
fn a_full_global_cap_evicts_from_the_address_holding_the_most() {
    let (l, m) = limits(4, 4, Duration::from_secs(30));
    let a: Vec<_> = (0..4).map(|i| l.admit(peer(&format!("10.0.0.1:{}", 1000 + i))).unwrap()).collect();
    // Full, all from one address: a newcomer from another address takes the oldest's place.
    let b1 = l.admit(peer("10.0.0.2:1000")).expect("admitted by evicting");
    assert_eq!(state_of(&a[0]), EVICTED);
    assert!(a[1..].iter().all(|s| state_of(s) == HELD));
    assert_eq!((l.open(), m.unauthenticated_connections.get(), m.connections_evicted.get()), (4, 4, 1));
    // A holds 3, B would hold 2: evict A's oldest left.
    let b2 = l.admit(peer("10.0.0.2:1001")).unwrap();
    assert_eq!(state_of(&a[1]), EVICTED);
    // A holds 2, B would hold 3: never evict from an address holding fewer.
    assert_eq!(l.admit(peer("10.0.0.2:1002")).unwrap_err(), Cap::Total);
    // C (would hold 1): among A and B (2 each) the oldest connection goes, which is A's.
    let c1 = l.admit(peer("10.0.0.3:1000")).unwrap();
    assert_eq!(state_of(&a[2]), EVICTED);
    assert_eq!((state_of(&b1), state_of(&b2)), (HELD, HELD));
    assert_eq!((l.open(), m.unauthenticated_connections.get(), m.connections_evicted.get()), (4, 4, 3));
    // Dropping evicted slots releases nothing twice; a held one frees its place.
    drop(a);
    assert_eq!((l.open(), m.unauthenticated_connections.get()), (3, 3));
    drop((b1, b2, c1));
    assert_eq!((l.open(), m.unauthenticated_connections.get()), (0, 0));
}

#[test]
fn an_authenticated_connection_is_never_evicted() {
    let (l, _m) = limits(2, 2, Duration::from_secs(30));
    let p = peer("10.0.0.1:1000");
    let session = l.admit(p).unwrap();
    let other = l.admit(peer("10.0.0.1:1001")).unwrap();
    l.authenticated(p);
    let _b1 = l.admit(peer("10.0.0.2:1000")).unwrap(); // the free place
    let _b2 = l.admit(peer("10.0.0.3:1000")).unwrap(); // evicts the other one of 10.0.0.1
    assert_eq!((state_of(&session), state_of(&other)), (AUTHENTICATED, EVICTED));
}

#[tokio::test(start_paused = true)]
async fn an_evicted_connection_is_closed_at_once() {
    let (l, m) = limits(1, 1, Duration::from_secs(30));
    let (_client, server) = tokio::io::duplex(64);
    let mut guarded =
        Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(30), AGE);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        let started = Instant::now();
        (guarded.read(&mut buf).await.unwrap_err().kind(), started.elapsed())
    });
    tokio::task::yield_now().await; // the reader waits in its read
    let _newcomer = l.admit(peer("10.0.0.2:1")).unwrap();
    let (kind, after) = reader.await.unwrap();
    assert_eq!(kind, io::ErrorKind::ConnectionAborted);
    assert_eq!(after, Duration::ZERO, "woken at once, not at a timeout");
    assert_eq!((m.connections_evicted.get(), m.connection_idle_timeouts.get()), (1, 0));
    assert_eq!(l.open(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_busy_unauthenticated_connection_is_closed_at_its_maximum_age() {
    let (l, m) = limits(8, 8, Duration::from_secs(5));
    let (mut client, server) = tokio::io::duplex(64);
    let age = Duration::from_secs(12);
    let mut guarded =
        Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), age);
    let started = Instant::now();
    // A byte every second: the idle timer never fires.
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client.write_all(b"x").await.is_err() {
                break;
            }
        }
        client
    });
    let mut buf = [0u8; 1];
    let mut got = 0;
    let err = loop {
        match guarded.read(&mut buf).await {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
        assert!(got <= 30, "never closed");
    };
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(within(started.elapsed(), 12), "{:?}", started.elapsed());
    assert_eq!((m.connection_max_age_closes.get(), m.connection_idle_timeouts.get()), (1, 0));
    drop(guarded);
    drop(writer.await.unwrap());
    assert_eq!(l.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_authenticated_connection_has_no_maximum_age() {
    let (l, _m) = limits(8, 8, Duration::from_secs(5));
    let p = peer("10.0.0.1:1");
    let (mut client, server) = tokio::io::duplex(64);
    let mut guarded =
        Guarded::watched(server, l.admit(p).unwrap(), Duration::from_secs(5), Duration::from_secs(10));
    l.authenticated(p);
    tokio::time::sleep(Duration::from_secs(60)).await;
    client.write_all(b"b").await.unwrap();
    let mut buf = [0u8; 1];
    guarded.read_exact(&mut buf).await.expect("open after a minute");
}

#[test]
fn sessions_fit_the_open_file_limit_next_to_the_unauthenticated_connections() {
    // ulimit -n 300: 150 unauthenticated, 64 spare, 86 sessions.
    assert_eq!(sessions_fit_open_files(Some(300), fit_to_open_files(4096, Some(300))), 86);
    assert_eq!(sessions_fit_open_files(Some(1_048_576), 4096), 1_048_576 - 4096 - 64);
    assert_eq!(sessions_fit_open_files(Some(10), 5), 1);
    assert_eq!(sessions_fit_open_files(None, 4096), usize::MAX);
    let metrics = Metrics::new();
    let mut config = ServeConfig::for_data_dir("/nonexistent");
    config.max_sessions = Some(3);
    config.max_sessions_per_token = 1;
    config.max_sessions_per_account = 2;
    let caps = ConnectionLimits::from_config(&config, &metrics).session_caps();
    assert_eq!((caps.per_token, caps.per_account, caps.total), (1, 2, 3));
    config.max_sessions = Some(10_000_000);
    let l = ConnectionLimits::from_config(&config, &metrics);
    let fitted = sessions_fit_open_files(open_file_limit(), l.max_total());
    assert_eq!(l.session_caps().total, fitted, "never above what the open-file limit leaves");
}

#[test]
fn an_authenticated_connection_no_longer_counts() {
    let (l, m) = limits(2, 2, Duration::from_secs(30));
    let p = peer("10.0.0.1:1000");
    let slot = l.admit(p).unwrap();
    let _other = l.admit(peer("10.0.0.1:1001")).unwrap();
    assert!(l.admit(peer("10.0.0.1:1002")).is_err());
    l.authenticated(p);
    assert_eq!(l.open(), 1);
    let third = l.admit(peer("10.0.0.1:1002")).expect("the authenticated session left the cap");
    drop(slot); // the session ends later: nothing is released twice
    assert_eq!(l.open(), 2);
    drop(third);
    assert_eq!(l.open(), 1);
    assert_eq!(m.unauthenticated_connections.get(), 1);
    l.authenticated(peer("10.0.0.9:1")); // unknown peer: nothing happens
    assert_eq!(l.open(), 1);
}

#[test]
fn refusals_are_counted_by_cap() {
    let (l, m) = limits(4, 3, Duration::from_secs(30));
    let mut held: Vec<_> = ["10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "10.0.0.2:2"]
        .into_iter()
        .map(|p| l.admit(peer(p)).unwrap())
        .collect();
    // Full, and each newcomer's address would hold more than any other: nobody is evicted.
    for p in ["10.0.0.1:3", "10.0.0.2:3"] {
        let cap = l.admit(peer(p)).unwrap_err();
        assert_eq!(cap, Cap::Total);
        l.refused(cap, peer(p));
    }
    held.pop();
    held.push(l.admit(peer("10.0.0.1:3")).unwrap());
    for _ in 0..3 {
        let cap = l.admit(peer("10.0.0.1:4")).unwrap_err();
        assert_eq!(cap, Cap::PerAddress);
        l.refused(cap, peer("10.0.0.1:4"));
    }
    let count = |cap: &str| m.connections_refused.get_or_create(&CapLabel { cap: cap.into() }).get();
    assert_eq!((count("per_address"), count("total")), (3, 2));
    assert_eq!(m.connections_evicted.get(), 0);
}

#[test]
fn the_global_cap_fits_the_open_file_limit() {
    assert_eq!(fit_to_open_files(4096, Some(1024)), 512);
    assert_eq!(fit_to_open_files(100, Some(1024)), 100);
    assert_eq!(fit_to_open_files(4096, None), 4096);
    assert_eq!(fit_to_open_files(4096, Some(1)), 1);
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max processes             63432                63432                processes \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(parse_open_file_limit(limits), Some(1024));
    assert_eq!(parse_open_file_limit("Max open files  unlimited  unlimited  files"), None);
    assert_eq!(parse_open_file_limit(""), None);
    assert!(open_file_limit().is_some_and(|n| n > 0), "readable on Linux");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_timeout() {
    let (l, m) = limits(8, 8, Duration::from_secs(5));
    let (client, server) = tokio::io::duplex(64);
    let mut guarded =
        Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
    let started = Instant::now();
    let mut buf = [0u8; 8];
    let err = guarded.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(within(started.elapsed(), 5), "{:?}", started.elapsed());
    assert_eq!(m.connection_idle_timeouts.get(), 1);
    drop(guarded);
    assert_eq!(l.open(), 0, "closing releases the slot");
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn traffic_resets_the_idle_timer() {
    let (l, _m) = limits(8, 8, Duration::from_secs(5));
    let (mut client, server) = tokio::io::duplex(64);
    let mut guarded =
        Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
    let started = Instant::now();
    // A byte every 4 s keeps it open (a trickle is bounded by the header timeout instead).
    let writer = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(b"x").await.unwrap();
        }
        client
    });
    let mut buf = [0u8; 1];
    for _ in 0..5 {
        guarded.read_exact(&mut buf).await.unwrap();
    }
    assert!(within(started.elapsed(), 20), "{:?}", started.elapsed());
    let _client = writer.await.unwrap();
    let err = guarded.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(within(started.elapsed(), 25), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_write_is_bounded_too() {
    let (l, _m) = limits(8, 8, Duration::from_secs(5));
    let (_client, server) = tokio::io::duplex(16);
    let mut guarded =
        Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
    let err = guarded.write_all(&[0u8; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "a peer that does not read");
}

#[tokio::test(start_paused = true)]
async fn authentication_stops_the_idle_timer() {
    let (l, _m) = limits(8, 8, Duration::from_secs(5));
    let p = peer("10.0.0.1:1");
    let (mut client, server) = tokio::io::duplex(64);
    let mut guarded = Guarded::watched(server, l.admit(p).unwrap(), Duration::from_secs(5), AGE);
    client.write_all(b"a").await.unwrap();
    let mut buf = [0u8; 1];
    guarded.read_exact(&mut buf).await.unwrap();
    l.authenticated(p);
    assert_eq!(l.open(), 0);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1];
        guarded.read_exact(&mut buf).await.map(|_| buf)
    });
    tokio::time::sleep(Duration::from_secs(3_600)).await; // paused clock: an hour passes at once
    client.write_all(b"b").await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), *b"b", "still open after an idle hour");
}
