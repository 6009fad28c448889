//! `broker-fanout-bench`: push fan-out through an MQTT broker (issue 18,
//! capacity page). Starts Debian's mosquitto on loopback
//! (`ota_testkit::mqtt_broker`), connects `--subscribers` device
//! subscriptions through the agent's own code path
//! ([`ota_client::broker::subscribe_notices`], QoS 1, the four device
//! topics), then publishes `--rounds` release notices one after another the
//! way the tracker does (QoS 1, retained, on `ota/releases/stable/generic`)
//! and measures, per round, the time from the publish call until each
//! subscriber holds the notice: p50, p99 and the last one (ms), and the
//! deliveries per second up to the last. Run by `bench/broker-fanout.sh`.

use std::time::{Duration, Instant};

use clap::Parser;
use ota_client::broker::{subscribe_notices, BrokerEvent, NoticeSubscription};
use ota_proto::release_notice::{self, BrokerAddr, ReleaseNotice, DEFAULT_PREFIX};
use ota_proto::InfoHash;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Times release-notice fan-out through mosquitto.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Device subscriptions (one MQTT connection each).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Notices published, one after another (each waits for every delivery).
    #[arg(long, default_value_t = 3)]
    rounds: u8,
    /// Longest wait for the subscriptions, then for each round, seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.subscribers > 0 && a.rounds > 0,
        "--subscribers and --rounds must be positive"
    );
    let limit = Duration::from_secs(a.timeout_secs);
    let broker = ota_testkit::mqtt_broker::MqttBroker::start().await;
    let addr: BrokerAddr = broker.url(None).parse().map_err(anyhow::Error::msg)?;

    // Every subscription forwards what it receives to one channel, tagged.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, BrokerEvent, Instant)>();
    let mut tasks = Vec::with_capacity(a.subscribers);
    for i in 0..a.subscribers {
        let (mut events, task) = subscribe_notices(NoticeSubscription {
            addr: addr.clone(),
            prefix: DEFAULT_PREFIX.into(),
            client_id: format!("bench-device-{i}"),
            channel: "stable".into(),
            model: "generic".into(),
            keep_alive: Duration::from_secs(60),
        })?;
        tasks.push(task);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if tx.send((i, ev, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    let started = Instant::now();
    let mut connected = vec![false; a.subscribers];
    let mut n_connected = 0;
    while n_connected < a.subscribers {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((i, BrokerEvent::Connected, _))) if !connected[i] => {
                connected[i] = true;
                n_connected += 1;
            }
            Ok(Some(_)) => {}
            _ => anyhow::bail!("{n_connected} of {} subscriptions connected", a.subscribers),
        }
    }
    println!(
        "subscribers {} connected and subscribed in {:.0} ms",
        a.subscribers,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let mut opts = MqttOptions::new("bench-tracker", &addr.host, addr.port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let topic = release_notice::release_topics(DEFAULT_PREFIX, Some("stable"), &["generic".to_string()])
        .into_iter()
        .next()
        .expect("one topic");
    println!("round subscribers p50_ms p99_ms last_ms deliveries_per_s");
    for round in 1..=a.rounds {
        let notice = ReleaseNotice {
            info_hash: InfoHash([round; 20]),
            name: "fw.bin".into(),
            version: format!("1.{round}"),
            rollout_percent: 100,
        };
        let t0 = Instant::now();
        client
            .publish(topic.clone(), QoS::AtLeastOnce, true, notice.encode())
            .await?;
        let mut got = vec![None; a.subscribers];
        let mut n = 0;
        while n < a.subscribers {
            let left = limit.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((i, BrokerEvent::Notice(x), at))) if x.info_hash == notice.info_hash && got[i].is_none() => {
                    got[i] = Some(at - t0);
                    n += 1;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("round {round}: {n} of {} subscribers got the notice", a.subscribers),
            }
        }
        let mut lat: Vec<Duration> = got.into_iter().flatten().collect();
        lat.sort_unstable();
        let last = *lat.last().expect("at least one");
        println!(
            "{round} {} {:.1} {:.1} {:.1} {:.0}",
            a.subscribers,
            pct(&lat, 50),
            pct(&lat, 99),
            last.as_secs_f64() * 1000.0,
            a.subscribers as f64 / last.as_secs_f64().max(1e-9)
        );
    }
    for t in tasks {
        t.abort();
    }
    drop(broker);
    Ok(())
}
