//! The control store's backend against a real etcd 3.4 (started by the test on free
//! ports): the lease that lets one node of a fleet run the rollout runner, and the blob
//! store that holds config-file contents in chunks under etcd's request limit.

use std::time::{Duration, Instant};

use apus_testkit::{Etcd, TempDir};

/// The rollout runner's lease on a real etcd: one holder at a time, renewal keeps it, and
/// when the holder stops renewing, another node takes it after the TTL.
#[test]
fn one_node_holds_a_lease_until_it_stops_renewing() {
    let etcd_dir = TempDir::new("apus-etcd-lease");
    let etcd = Etcd::start(etcd_dir.path());
    let (d1, d2) = (TempDir::new("apus-lease-1"), TempDir::new("apus-lease-2"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = etcd.url("lease-test");
        let a = apus_control::open(&url, d1.path()).await.unwrap();
        let b = apus_control::open(&url, d2.path()).await.unwrap();
        let ttl = Duration::from_secs(2);
        assert!(a.hold("rollouts", "node-a", ttl).await.unwrap());
        assert!(!b.hold("rollouts", "node-b", ttl).await.unwrap());
        // A renews for longer than the TTL: it keeps the lease, B never gets it.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            assert!(a.hold("rollouts", "node-a", ttl).await.unwrap());
            assert!(!b.hold("rollouts", "node-b", ttl).await.unwrap());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Another name is free.
        assert!(b.hold("other-job", "node-b", ttl).await.unwrap());
        // A stops renewing (its process died): B takes over within the TTL and a bit.
        let stopped = Instant::now();
        let mut took = None;
        while stopped.elapsed() < Duration::from_secs(10) {
            if b.hold("rollouts", "node-b", ttl).await.unwrap() {
                took = Some(stopped.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = took.expect("B never took the lease");
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(
            !a.hold("rollouts", "node-a", ttl).await.unwrap(),
            "A lost it"
        );
        // The local log: a single node always holds it.
        let local = TempDir::new("apus-lease-local");
        let l = apus_control::open("local", local.path()).await.unwrap();
        assert!(l.hold("rollouts", "x", ttl).await.unwrap());
    });
}

/// Blobs on etcd: a 5 MB content goes in 512 KiB chunks (etcd refuses requests over
/// 1.5 MiB) and comes back whole; a second put of the same bytes is the same digest; an
/// unknown or malformed digest is nothing.
#[test]
fn blobs_over_etcds_request_limit_round_trip() {
    let etcd_dir = TempDir::new("apus-etcd-blob");
    let etcd = Etcd::start(etcd_dir.path());
    let d = TempDir::new("apus-blob-node");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = apus_control::open(&etcd.url("blob-test"), d.path())
            .await
            .unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = s.put_blob(data.clone().into()).await.unwrap();
        assert_eq!(digest, apus_control::digest(&data));
        assert_eq!(s.put_blob(data.clone().into()).await.unwrap(), digest);
        let back = s.get_blob(&digest).await.unwrap().expect("stored");
        assert_eq!(back.len(), data.len());
        assert!(back[..] == data[..]);
        assert!(s.get_blob(&"0".repeat(64)).await.unwrap().is_none());
        assert!(s.get_blob("../../etc/passwd").await.unwrap().is_none());
        let too_big = vec![0u8; apus_control::MAX_BLOB + 1];
        assert!(s.put_blob(too_big.into()).await.is_err());
    });
}
