//! `cohort demo`: a three-node cluster on this machine, narrated.
//!
//! The demo runs real processes (`cohort node --json`, started from this executable) so
//! what it shows is what a deployment does: discovery by multicast on loopback, an ACKed
//! message to everyone, a graceful leave, and a `kill -9` found by the heartbeat timeout.
//! Then three election voters (`cohort elect --json`) elect a leader and replace it when
//! it is killed.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::CliResult;

/// Options of `cohort demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Multicast port of the demo cluster (kept apart from a real Tribes cluster's 45564).
    #[arg(long, default_value_t = 45600)]
    mcast_port: u16,
    /// First TCP port of the demo nodes.
    #[arg(long, default_value_t = 4100)]
    port: u16,
    /// Election port of the first demo voter (the others use the next ports).
    #[arg(long, default_value_t = 4201)]
    election_port: u16,
}

struct DemoNode {
    child: Child,
    stdin: ChildStdin,
}

type Line = (usize, Value);

pub(crate) async fn run(args: DemoArgs) -> CliResult {
    let exe = std::env::current_exe()?;
    let names = ["alpha", "beta", "gamma"];
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let started = Instant::now();
    let mut nodes = Vec::new();
    let mut ids: HashMap<String, &'static str> = HashMap::new();
    println!(
        "cohort demo: three nodes on 127.0.0.1, multicast group 228.0.0.4:{}\n",
        args.mcast_port
    );
    for (i, name) in names.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "node",
                "--json",
                "--domain",
                "cohort-demo",
                "--payload",
                name,
            ])
            .args(["--port", &(args.port + i as u16 * 10).to_string()])
            .args(["--mcast-port", &args.mcast_port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send((i, v));
                }
            }
        });
        nodes.push(DemoNode { child, stdin });
    }
    let stamp = |at: Instant| format!("{:>6.0} ms", (at - started).as_secs_f64() * 1000.0);

    println!("1. Discovery and the group: heartbeats every 500 ms; the first node forms a group");
    println!(
        "   and invites the others the moment it hears them. Every node installs the same views."
    );
    let mut full = 0;
    while full < 3 {
        let (i, v) = next(&mut rx).await?;
        match event(&v) {
            "started" => {
                ids.insert(str_of(&v, "id"), names[i]);
                println!(
                    "   {}  {} started on port {}",
                    stamp(Instant::now()),
                    names[i],
                    v["port"]
                );
            }
            "view" => {
                let members = view_names(&v, &ids);
                if v["members"].as_array().map_or(0, Vec::len) == 3 {
                    full += 1;
                }
                println!(
                    "   {}  {} installs view {} [{members}]",
                    stamp(Instant::now()),
                    names[i],
                    v["seq"]
                );
            }
            _ => {}
        }
    }

    println!("\n2. alpha sends \"hello cluster\" to every member and waits for their ACKs.");
    nodes[0].stdin.write_all(b"hello cluster\n").await?;
    let mut pending = 3;
    while pending > 0 {
        let (i, v) = next(&mut rx).await?;
        match event(&v) {
            "message" => {
                pending -= 1;
                println!(
                    "   {}  {} received {:?}",
                    stamp(Instant::now()),
                    names[i],
                    str_of(&v, "data")
                );
            }
            "send_result" => {
                pending -= 1;
                println!(
                    "   {}  alpha: acknowledged by {}",
                    stamp(Instant::now()),
                    names_of(&v["acked"], &ids)
                );
            }
            _ => {}
        }
    }

    println!(
        "\n3. beta hangs (SIGSTOP) for 4 s. After 1.7 s of silence the others suspect it; the"
    );
    println!("   coordinator removes it once a witness agrees. When it resumes, it learns it was");
    println!("   removed and rejoins by itself, under a new id.");
    let stopped = Instant::now();
    signal(&nodes[1].child, "-STOP").await;
    let mut resumed = false;
    let mut back = false;
    while !back {
        let wait = if resumed {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(4).saturating_sub(stopped.elapsed())
        };
        let line = tokio::time::timeout(wait, next(&mut rx)).await;
        let Ok(line) = line else {
            println!("   {}  beta resumes (SIGCONT)", stamp(Instant::now()));
            signal(&nodes[1].child, "-CONT").await;
            resumed = true;
            continue;
        };
        let (i, v) = line?;
        match event(&v) {
            "view" if i == 0 => {
                let members = view_names(&v, &ids);
                println!(
                    "   {}  alpha installs view {} [{members}], {} ms after the stop",
                    stamp(Instant::now()),
                    v["seq"],
                    stopped.elapsed().as_millis()
                );
                back = resumed && v["members"].as_array().map_or(0, Vec::len) == 3;
            }
            "rejoined" => {
                ids.insert(str_of(&v, "new_id"), "beta");
                println!(
                    "   {}  beta: removed while stopped; rejoining as {}",
                    stamp(Instant::now()),
                    &str_of(&v, "new_id")[..8]
                );
            }
            _ => {}
        }
    }

    println!(
        "\n4. gamma leaves gracefully (SIGTERM): the coordinator installs a view without it at once."
    );
    let left = Instant::now();
    signal(&nodes[2].child, "-TERM").await;
    loop {
        let (i, v) = next(&mut rx).await?;
        if i == 0 && event(&v) == "view" {
            println!(
                "   {}  alpha installs view {} [{}], {} ms after gamma left",
                stamp(Instant::now()),
                v["seq"],
                view_names(&v, &ids),
                left.elapsed().as_millis()
            );
            break;
        }
    }

    println!(
        "\n5. beta is killed with SIGKILL: its ring connection closes, so it is removed at once"
    );
    println!("   (no waiting for heartbeats to go missing).");
    let killed = Instant::now();
    nodes[1].child.start_kill()?;
    loop {
        let (i, v) = next(&mut rx).await?;
        if i == 0 && event(&v) == "view" {
            println!(
                "   {}  alpha installs view {} [{}], {} ms after the kill",
                stamp(Instant::now()),
                v["seq"],
                view_names(&v, &ids),
                killed.elapsed().as_millis()
            );
            break;
        }
    }

    println!("\n6. alpha is alone; it stops.");
    signal(&nodes[0].child, "-TERM").await;
    for node in &mut nodes {
        let _ = tokio::time::timeout(Duration::from_secs(3), node.child.wait()).await;
        let _ = node.child.start_kill();
    }
    election(&exe, args.election_port, started).await?;
    println!(
        "\ndone. Run `cohort node --help` or `cohort elect --help` to start nodes of your own."
    );
    Ok(())
}

/// Act 7: three voters elect a leader; the leader is killed and the others elect another.
async fn election(exe: &std::path::Path, base: u16, started: Instant) -> CliResult {
    let stamp = |at: Instant| format!("{:>6.0} ms", (at - started).as_secs_f64() * 1000.0);
    println!("\n7. Leader election: three voters (ZooKeeper's Fast Leader Election, cohort elect)");
    println!(
        "   elect the best vote by majority; the leader is killed and the others elect another."
    );
    let voters: Vec<String> = (1..=3u16)
        .map(|sid| format!("{sid}=127.0.0.1:{}", base + sid - 1))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let mut children = Vec::new();
    for sid in 1..=3usize {
        let mut child = Command::new(exe)
            .args(["elect", "--json", "--id", &sid.to_string()])
            .args(voters.iter().flat_map(|v| ["--voter", v.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send((sid, v));
                }
            }
        });
        children.push(child);
    }
    // Each voter's latest role and leader (index 0 unused: sids are 1..=3).
    let mut roles: Vec<(String, Option<i64>)> = vec![(String::new(), None); 4];
    let agreed = |roles: &[(String, Option<i64>)], alive: &[usize]| -> Option<i64> {
        let leader = roles[alive[0]].1?;
        alive
            .iter()
            .all(|&s| {
                let want = if s as i64 == leader {
                    "leading"
                } else {
                    "following"
                };
                roles[s].1 == Some(leader) && roles[s].0 == want
            })
            .then_some(leader)
    };
    let mut alive = vec![1, 2, 3];
    let began = Instant::now();
    let leader = loop {
        let (sid, v) = next(&mut rx).await?;
        if event(&v) == "role" {
            roles[sid] = (str_of(&v, "role"), v["leader"].as_i64());
            if let Some(leader) = agreed(&roles, &alive) {
                break leader;
            }
        }
    };
    println!(
        "   {}  voters 1, 2, 3 agree: voter {leader} leads, {} ms after they started",
        stamp(Instant::now()),
        began.elapsed().as_millis()
    );
    let killed = Instant::now();
    children[leader as usize - 1].start_kill()?;
    alive.retain(|&s| s as i64 != leader);
    let new_leader = loop {
        let (sid, v) = next(&mut rx).await?;
        if event(&v) == "role" && alive.contains(&sid) {
            roles[sid] = (str_of(&v, "role"), v["leader"].as_i64());
            if let Some(l) = agreed(&roles, &alive).filter(|&l| l != leader) {
                break l;
            }
        }
    };
    println!(
        "   {}  voter {leader} killed (SIGKILL); voter {new_leader} leads, {} ms after the kill",
        stamp(Instant::now()),
        killed.elapsed().as_millis()
    );
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(())
}

/// The demo names of a `view` event's members, in view order (the coordinator first).
fn view_names(v: &Value, ids: &HashMap<String, &'static str>) -> String {
    names_of(&v["members"], ids)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<Line>,
) -> Result<Line, Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err("the demo nodes exited".into()),
        Err(_) => Err("nothing happened for 10 s; is multicast on loopback blocked here?".into()),
    }
}

fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("").to_string()
}

fn names_of(list: &Value, ids: &HashMap<String, &'static str>) -> String {
    let names: Vec<&str> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    ids.get(m["id"].as_str().unwrap_or(""))
                        .copied()
                        .unwrap_or("?")
                })
                .collect()
        })
        .unwrap_or_default();
    names.join(", ")
}

async fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .await;
    }
}
