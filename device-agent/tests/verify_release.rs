//! The agent against a real tracker, a real S3-protocol server and the
//! S3-backed seeder, all in this process on loopback: a good release is
//! installed byte for byte; a release whose manifest SHA-256 does not match
//! the package is refused and no copy is kept.

mod common;

use std::time::Duration;

use common::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installs_a_good_release_and_refuses_a_tampered_one() {
    let stack = Stack::start().await;
    let client = &stack.tracker.client();

    // Four packages: one published honestly; one whose signed manifest gives
    // a SHA-256 the package does not have; one signed with another key; one
    // whose manifest text was altered after signing.
    let maker = ota_proto::manifest::generate_signing_key();
    let stranger = ota_proto::manifest::generate_signing_key();
    let good: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let bad: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let other: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    let altered: Vec<u8> = (0..200_000u32).map(|i| (i % 233) as u8).collect();
    let same_version: Vec<u8> = (0..100_000u32).map(|i| (i % 229) as u8).collect();
    let mut hashes = Vec::new();
    for (key, data, case) in [
        ("good.bin", &good, 0),
        ("tampered.bin", &bad, 1),
        ("stranger.bin", &other, 2),
        ("altered.bin", &altered, 3),
        ("again/good.bin", &same_version, 4),
    ] {
        let req = ota_seeder::publish::PublishRequest {
            signing: Some(ota_seeder::publish::ManifestSigning {
                key: if case == 2 { stranger.clone() } else { maker.clone() },
                channel: "stable".into(),
                models: vec!["gw-100".into()],
            }),
            ..stack.publish_request(key, 262_144, None)
        };
        let mut new = stack.hash(data, &req).await;
        let signed = new.manifest.clone().unwrap();
        if case == 1 {
            let mut m: ota_proto::manifest::Manifest = serde_json::from_str(&signed.manifest).unwrap();
            m.sha256 = "0".repeat(64);
            new.sha256 = m.sha256.clone();
            new.manifest = Some(ota_proto::manifest::sign(&m, &maker));
        }
        if case == 3 {
            let text = signed.manifest.replace("\"version\":\"1\"", "\"version\":\"9\"");
            assert_ne!(text, signed.manifest);
            new.manifest = Some(ota_proto::manifest::SignedManifest {
                manifest: text,
                ..signed
            });
        }
        client.register(&new).await.unwrap();
        hashes.push(new.info_hash);
    }

    // The S3-backed seeder.
    let seeder = stack.start_seeder_unsynced().await;
    assert_eq!(seeder.sync_releases().await.unwrap(), 5);
    for ih in &hashes {
        assert!(
            common::wait_origin(client, ih, 1, Duration::from_secs(10)).await,
            "origin announced {ih}"
        );
    }

    // The agent.
    let state = stack.dir.path().join("agent");
    let mut settings = common::settings("dev-test", &state);
    settings.manifest_key = Some(maker.verifying_key());
    let agent = common::agent_with(stack.tracker.url(), settings, None).await;
    let installed = agent.handle_release(&hashes[0]).await.unwrap();
    assert_eq!(std::fs::read(&installed.path).unwrap(), good, "byte-identical package");

    let err = format!("{:#}", agent.handle_release(&hashes[1]).await.unwrap_err());
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(
        !common::download_folder(&state, &hashes[1]).exists(),
        "no copy of the refused package is kept"
    );
    // Another good.bin at the installed version is not an upgrade.
    let err = format!("{:#}", agent.handle_release(&hashes[4]).await.unwrap_err());
    assert!(err.contains("version 1 is not newer than the installed 1"), "{err}");
    assert!(!common::download_folder(&state, &hashes[4]).exists());
    for ih in &hashes[2..4] {
        let err = format!("{:#}", agent.handle_release(ih).await.unwrap_err());
        assert!(
            err.contains("manifest rejected: manifest signature does not verify"),
            "{err}"
        );
        assert!(
            !common::download_folder(&state, ih).exists(),
            "a rejected manifest is never downloaded"
        );
        let r = &client.telemetry(ih).await.unwrap()[0];
        assert!(r.error.as_deref().unwrap_or("").contains("manifest rejected"), "{r:?}");
    }
    assert_eq!(agent.installed().len(), 1);
    assert!(agent.installed().contains_key(&hashes[0]));

    let reports = client.telemetry(&hashes[1]).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].verified);
    assert!(reports[0].error.as_deref().unwrap_or("").contains("SHA-256 mismatch"));
    let good_report = &client.telemetry(&hashes[0]).await.unwrap()[0];
    assert!(good_report.verified);
    assert_eq!(
        good_report.bytes_from_origin + good_report.bytes_from_peers,
        good.len() as u64
    );
    assert_eq!(
        good_report.bytes_from_origin,
        good.len() as u64,
        "only the origin was there to serve it"
    );

    // The origin's ledger holds what it sent: the good package once, over BitTorrent.
    let egress = seeder.egress().await.unwrap();
    let good_egress = egress.iter().find(|e| e.info_hash == hashes[0]).unwrap();
    assert_eq!(good_egress.bittorrent_bytes, good.len() as u64);
    assert_eq!(good_egress.http_bytes, 0);

    agent.stop().await;
    seeder.stop().await;
    stack.tracker.stop().await;
}
