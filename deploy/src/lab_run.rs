//! Flash crowds in the NAT lab: builds a [`Plan`] (`thesis-lan` or
//! `internet`) as namespaces, routers and links, puts the origin (S3
//! endpoint, tracker, seeder) on a server host of the lab's internet and
//! every device agent in its own host namespace, runs
//! [`flash_crowd::run_placed`] there and removes the lab afterwards (also
//! after a failure or Ctrl-C, see [`Lab`]).

use std::net::SocketAddr;

use anyhow::Context;

use crate::device_moves::{self, MovePlan, MoveSettings};
use crate::flash_crowd::{self, FlashCrowdArgs, PlacedDevice, Placement, Summary};
use crate::lab::{netns, Lab, RouterKind, WanLink};
use crate::topology::{self, NatKind, Plan, Scenario, Topology};

/// Bits per second of a `--*-mbit` setting; 0 (or less) means unshaped.
fn bits_per_s(mbit: f64) -> Option<u64> {
    (mbit > 0.0).then_some((mbit * 1e6) as u64)
}

/// The plan of run number `run` (from 1) of `args`: `thesis-lan` with the
/// study's scenario, or `internet` with the mix and seed + run − 1.
///
/// Errors: `--scenario` is not a study scenario in `thesis-lan`, or the
/// device count is out of range.
pub fn plan(args: &FlashCrowdArgs, run: usize) -> anyhow::Result<Plan> {
    let plan = match args.topology {
        Topology::ThesisLan => {
            let name = args.scenario.as_deref().unwrap_or("general");
            let scenario = <Scenario as clap::ValueEnum>::from_str(name, false)
                .map_err(|_| anyhow::anyhow!("thesis-lan scenarios are ideal, worst and general, not {name:?}"))?;
            topology::thesis_lan(scenario, args.devices.unwrap_or(5))
        }
        Topology::Internet => {
            let mix = args.mix.clone().unwrap_or_default();
            let mut p = topology::internet(args.devices.unwrap_or(10), &mix, args.seed + run as u64 - 1)
                .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(name) = &args.scenario {
                p.scenario = name.clone();
            }
            Ok(p)
        }
        Topology::Loopback => anyhow::bail!("the loopback topology does not use the lab"),
    };
    plan.map_err(|e| anyhow::anyhow!(e))
}

/// The lab router kind that realises a planned one: a forwarded port is a
/// cone router plus [`Lab::forward_port`].
fn router_kind(kind: NatKind) -> RouterKind {
    match kind {
        NatKind::Public => RouterKind::Public,
        NatKind::PortForwarded | NatKind::Cone => RouterKind::Cone,
        NatKind::Upnp => RouterKind::Upnp,
        NatKind::Symmetric => RouterKind::Symmetric,
        NatKind::Cgnat => RouterKind::Cgnat,
    }
}

/// Builds `plan` in `lab`: the origin's server host (uplink
/// `--origin-uplink-mbit`), each router with its WAN link
/// (`--home-uplink-mbit`, `--home-downlink-mbit`, `--wan-delay-ms`,
/// `--wan-loss-pct`), hairpin and forwards, and each device's host (LAN rate
/// `--lan-mbit` in `thesis-lan`). With `--move-at-pct`, a second router of
/// the first device's router's kind and link, for it to move to. Returns
/// where the run's processes go, and the move plan.
///
/// Errors: building a namespace, link or rule fails; `--move-at-pct`
/// without `--work-dir`.
pub fn build(
    lab: &mut Lab,
    plan: &Plan,
    args: &FlashCrowdArgs,
) -> anyhow::Result<(String, Placement, Option<MovePlan>)> {
    let origin = lab.add_server_host(bits_per_s(args.origin_uplink_mbit))?;
    let coturn = lab.start_coturn()?;
    let link = WanLink {
        up_bps: bits_per_s(args.home_uplink_mbit),
        down_bps: bits_per_s(args.home_downlink_mbit),
        delay_ms: args.wan_delay_ms,
        loss_pct: args.wan_loss_pct,
    };
    let lan = bits_per_s(args.lan_mbit).filter(|_| args.topology == Topology::ThesisLan);
    let mut devices: Vec<Option<PlacedDevice>> = vec![None; plan.devices.len()];
    let mut first: Option<(crate::lab::Host, crate::lab::Router)> = None;
    for r in &plan.routers {
        let router = lab.add_router_with(router_kind(r.kind), &link)?;
        if r.hairpin && r.kind != NatKind::Public && r.kind != NatKind::Cgnat {
            lab.enable_hairpin(&router)?;
        }
        for (n, &d) in r.devices.iter().enumerate() {
            let dev = &plan.devices[d];
            let host = lab.add_host(&router)?;
            if d == 0 {
                first = Some((host.clone(), router.clone()));
            }
            if lan.is_some() {
                lab.shape_host(&host, lan, lan)?;
            }
            if dev.connectable && r.kind == NatKind::PortForwarded {
                lab.forward_port(&router, n as u32, dev.peer_port)?;
            }
            devices[d] = Some(PlacedDevice {
                id: dev.id.clone(),
                netns: Some(host.ns.clone()),
                // The device that moves listens on every address, as a
                // device does by default (`0.0.0.0:6882`): a listener bound
                // to its first address would die with that address, and the
                // bridge could no longer splice incoming streams to it.
                peer_listen: if d == 0 && args.move_at_pct.is_some() {
                    SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), dev.peer_port)
                } else {
                    SocketAddr::new(host.addr.into(), dev.peer_port)
                },
                // A thesis-lan router forwards only some devices' ports:
                // the others are behind a plain cone NAT.
                nat: Some(if r.kind == NatKind::PortForwarded && !dev.connectable {
                    NatKind::Cone
                } else {
                    r.kind
                }),
                connectable: Some(dev.connectable),
            });
        }
    }
    let devices = devices
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("a planned device has no router")?;
    let moving = match (args.move_at_pct, first) {
        (Some(_), Some((host, home))) => {
            let work = args
                .work_dir
                .as_ref()
                .context("--move-at-pct needs --work-dir (the mover reads the agent's control socket there)")?;
            let away = lab.add_router_with(home.kind, &link)?;
            Some(MovePlan {
                host,
                routers: [home, away],
                socket: work.join("agents").join(&devices[0].id).join("agent.sock"),
            })
        }
        _ => None,
    };
    Ok((
        origin.ns,
        Placement {
            server_ip: origin.addr.into(),
            devices,
            topology: args.topology,
            scenario: plan.scenario.clone(),
            stun_rfc5780: Some(SocketAddr::V4(coturn.endpoint())),
        },
        moving,
    ))
}

/// Runs run number `run` (from 1) of `args` in a fresh lab: builds it,
/// runs the flash crowd on a thread inside the origin's namespace (with its
/// own tokio runtime, so the S3 server, the tracker and seeder processes
/// and the runner's API calls all live there), then removes the lab.
///
/// Errors: not root or a lab tool missing ([`Lab::new`]), building fails,
/// or the flash crowd fails ([`flash_crowd::run_placed`]).
pub fn run(args: &FlashCrowdArgs, run: usize) -> anyhow::Result<Summary> {
    let plan = plan(args, run)?;
    // The default package comes from apt-get, which has no way out of the
    // lab: fetch it here, before entering the origin's namespace.
    let mut args = args.clone();
    if args.package.is_none() {
        args.package = Some(crate::package::default_package(&args.cache_dir)?);
    }
    let args = &args;
    let mut lab = Lab::new()?;
    tracing::info!(prefix = lab.prefix(), routers = plan.routers.len(), devices = plan.devices.len(), scenario = %plan.scenario, "building the lab");
    let (origin_ns, placement, moving) = build(&mut lab, &plan, args)?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let lab_ref = &mut lab;
    let (result, moved) = std::thread::scope(|s| {
        let crowd = s.spawn(|| -> anyhow::Result<Summary> {
            // Tells the mover the crowd is over, also on an early return.
            struct Done<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _done = Done(&done);
            netns::enter(&origin_ns)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start a runtime in the origin's namespace")?;
            runtime.block_on(flash_crowd::run_placed(args, &placement))
        });
        let mover = moving.map(|plan| {
            let settings = MoveSettings {
                at_pct: args.move_at_pct.unwrap_or(50.0),
                count: args.moves,
                every: std::time::Duration::from_millis(args.move_every_ms),
            };
            let work = args.work_dir.clone().unwrap_or_default();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout_secs);
            let done = &done;
            s.spawn(move || device_moves::run(lab_ref, plan, settings, &work, done, deadline))
        });
        let result = crowd
            .join()
            .map_err(|_| anyhow::anyhow!("the flash-crowd thread panicked"))
            .and_then(|r| r);
        let moved = mover.map(|m| {
            m.join()
                .map_err(|_| anyhow::anyhow!("the mover thread panicked"))
                .and_then(|r| r)
        });
        (result, moved)
    });
    drop(lab);
    if let Some(moved) = moved {
        let moved = moved.context("moving the device")?;
        anyhow::ensure!(
            !moved.is_empty(),
            "--move-at-pct: the device finished before it could be moved"
        );
        tracing::info!(moves = moved.len(), "device moves done");
    }
    result
}
