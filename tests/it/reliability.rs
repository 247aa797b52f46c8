//! Reliability under crashes, bounded in time: the real binary is killed with
//! SIGKILL at a random point of each cycle (mid batch, mid answer, mid
//! webhook delivery, during a take-over) while clients post over REST, a
//! WebSocket and webchat, an attendant takes a conversation over and hands it
//! back, and the webhook receiver goes up and down. After every restart the
//! last acknowledged take-over or hand-back holds; after the last, every
//! acknowledged message is in its conversation exactly once and in order, and
//! every one has had its `message.created` delivered (copies only with the
//! same `webhook-id`).
//!
//! `TERTULIA_SOAK_CYCLES` (default 50) sets the cycle count for a longer run
//! by hand; `TERTULIA_SOAK_SEED` replays a run's kill points.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::binary::{
    create_session, free_port, get_json, kill, start_timed, write_config,
};
use crate::support::receiver::Receiver;
use crate::support::server::*;
use crate::support::soak::{
    Acked, Attended, Prng, attendant, rest_writer, socket_writer, webchat_writer,
};

const ADMIN: &str = "adm_soak";
/// REST conversations written to at once.
const REST_WRITERS: usize = 3;
/// Cycles a set of conversations is written to before the next set starts
/// (a conversation lists at most 5,000 messages back).
const CYCLES_PER_SET: usize = 10;

fn cycles() -> usize {
    std::env::var("TERTULIA_SOAK_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(50)
}

fn seed() -> u64 {
    std::env::var("TERTULIA_SOAK_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.unwrap().as_nanos() as u64
        })
}

fn config(dir: &Path, receiver: &Receiver) -> std::path::PathBuf {
    let settings = format!(
        r#"
[auth]
admin_token = "{ADMIN}"

[egress]
allow = ["127.0.0.0/8"]

[webhooks]
retry_schedule = [{schedule}]
timeout_ms = 2000

[[webhooks.endpoints]]
name = "crm"
tenant = "acme"
url = "{url}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["message.created"]
"#,
        schedule = vec!["\"100ms\""; 600].join(", "),
        url = receiver.url("/crm"),
    );
    write_config(dir, &settings)
}

/// The conversations one set of cycles writes to.
struct Set {
    rest: Vec<String>,
    socket: String,
    webchat: String,
}

impl Set {
    async fn create(base: &str, index: usize) -> Set {
        let mut sessions = Vec::new();
        for _ in 0..=REST_WRITERS {
            sessions.push(create_session(base).await);
        }
        Set {
            socket: sessions.pop().unwrap(),
            rest: sessions,
            webchat: format!("soak-visitor-{index:08}"),
        }
    }
}

async fn staff_key(base: &str) -> String {
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/admin/tenants/acme/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"kind": "staff", "name": "Ana"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// Everything the clients had acknowledged, by conversation (a webchat
/// conversation by its `session_id`).
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, Vec<Acked>>,
    webchat: BTreeSet<String>,
    switches: usize,
}

impl Ledger {
    fn next_number(&self, conversation: &str, cycle: usize) -> usize {
        self.acked.get(conversation).map_or(0, Vec::len) + cycle * 100_000
    }

    fn record(&mut self, conversation: &str, acked: Vec<Acked>) {
        self.acked
            .entry(conversation.to_owned())
            .or_default()
            .extend(acked);
    }

    fn total(&self) -> usize {
        self.acked.values().map(Vec::len).sum()
    }
}

/// One cycle: every client writes until the kill, which lands after a random
/// delay. Returns the attendant's last state.
async fn cycle(
    port: u16,
    set: &Set,
    staff: &str,
    ledger: &mut Ledger,
    cycle: usize,
    kill_after: Duration,
    child: &mut std::process::Child,
) -> Attended {
    let base = format!("http://127.0.0.1:{port}");
    let mut writers = Vec::new();
    for conversation in &set.rest {
        let first = ledger.next_number(conversation, cycle);
        let writer = rest_writer(base.clone(), conversation.clone(), first);
        writers.push((conversation.clone(), tokio::spawn(writer)));
    }
    let first = ledger.next_number(&set.socket, cycle);
    let writer = socket_writer(port, set.socket.clone(), first);
    writers.push((set.socket.clone(), tokio::spawn(writer)));
    let first = ledger.next_number(&set.webchat, cycle);
    let writer = webchat_writer(base.clone(), set.webchat.clone(), first);
    writers.push((set.webchat.clone(), tokio::spawn(writer)));
    ledger.webchat.insert(set.webchat.clone());
    let attending = tokio::spawn(attendant(base, set.socket.clone(), staff.to_owned()));

    tokio::time::sleep(kill_after).await;
    kill(child);
    for (conversation, writer) in writers {
        ledger.record(&conversation, writer.await.unwrap());
    }
    let attended = attending.await.unwrap();
    ledger.switches += attended.switches;
    attended
}

/// After a restart, the conversation is attended as the last acknowledged
/// take-over or hand-back left it.
async fn check_attended(base: &str, staff: &str, conversation: &str, attended: Attended) {
    if attended.in_flight {
        return;
    }
    let Some(taken_over) = attended.taken_over else {
        return;
    };
    let url = format!("{base}/console/api/conversations/{conversation}/messages?limit=1");
    let body = get_json(&url, staff).await;
    let human = &body["conversation"]["human"];
    assert_eq!(
        !human.is_null(),
        taken_over,
        "the acknowledged {} holds after a restart: {body}",
        if taken_over { "take-over" } else { "hand-back" }
    );
}

#[tokio::test]
async fn acknowledged_messages_and_their_events_survive_repeated_sigkills() {
    let (cycles, seed) = (cycles(), seed());
    println!("reliability: {cycles} cycles, TERTULIA_SOAK_SEED={seed}");
    let mut random = Prng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut receiver = Receiver::start().await;
    let config = config(dir.path(), &receiver);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let (mut child, _) = start_timed(&config, &data, port).await;
    let staff = staff_key(&base).await;
    let mut ledger = Ledger::default();
    let mut ready = Vec::new();
    let mut set = Set::create(&base, 0).await;
    for round in 0..cycles {
        if round > 0 && round % CYCLES_PER_SET == 0 {
            set = Set::create(&base, round / CYCLES_PER_SET).await;
        }
        // The receiver flaps: down in every other cycle.
        if round % 2 == 1 {
            receiver.stop().await;
        } else if round > 0 {
            receiver.restart().await;
        }
        let kill_after = Duration::from_millis(random.between(50, 900));
        let attended = cycle(
            port,
            &set,
            &staff,
            &mut ledger,
            round,
            kill_after,
            &mut child,
        )
        .await;
        let (restarted, took) = start_timed(&config, &data, port).await;
        child = restarted;
        ready.push(took);
        check_attended(&base, &staff, &set.socket, attended).await;
    }
    receiver.restart().await;

    let total = ledger.total();
    assert!(total >= cycles * 5, "clients were acknowledged: {total}");
    check_stored(&base, &ledger).await;
    let (events, deliveries) = check_delivered(&receiver, &ledger).await;
    ready.sort();
    println!(
        "reliability: {cycles} SIGKILLs, {total} acknowledged messages in {} conversations \
         (REST, socket, webchat), all stored once and in order; {} take-overs and hand-backs; \
         {events} message.created events delivered in {deliveries} deliveries ({} copies, \
         each with its event's webhook-id); ready after a restart p50 {:?}, max {:?}",
        ledger.acked.len(),
        ledger.switches,
        deliveries - events,
        ready[ready.len() / 2],
        ready[ready.len() - 1],
    );
    kill(&mut child);
}

/// The ids stored in a conversation, oldest first.
async fn stored_ids(base: &str, conversation: &str, webchat: bool) -> Vec<String> {
    let conversation = if webchat {
        let url = format!("{base}/api/webchat/history/{conversation}?limit=1");
        let history = get_json(&url, KEY).await;
        history["conversation_id"].as_str().unwrap().to_owned()
    } else {
        conversation.to_owned()
    };
    let body = get_json(
        &format!("{base}/chat/{conversation}/messages?limit=5000"),
        KEY,
    )
    .await;
    let messages = body.as_array().unwrap();
    assert!(
        messages.len() < 5000,
        "a conversation's messages fit one page"
    );
    messages
        .iter()
        .map(|message| message["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every acknowledged message (and a webchat message's answer) is stored
/// once, in the order it was sent.
async fn check_stored(base: &str, ledger: &Ledger) {
    for (conversation, sent) in &ledger.acked {
        let stored = stored_ids(base, conversation, ledger.webchat.contains(conversation)).await;
        let unique: BTreeSet<&String> = stored.iter().collect();
        assert_eq!(unique.len(), stored.len(), "no message is stored twice");
        let positions: Vec<usize> = sent
            .iter()
            .flat_map(|acked| {
                acked.ids.iter().enumerate().map(|(which, id)| {
                    stored
                        .iter()
                        .position(|stored| stored == id)
                        .unwrap_or_else(|| {
                            let kind = match (ledger.webchat.contains(conversation), which) {
                                (true, 0) => "a webchat question",
                                (true, _) => "a webchat answer",
                                (false, _) => "a REST or socket message",
                            };
                            panic!(
                                "acknowledged message {} ({id}, {kind}) of {conversation} is missing; \
                                 {} stored, {} acknowledged",
                                acked.number,
                                stored.len(),
                                sent.len()
                            )
                        })
                })
            })
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "in the order they were sent"
        );
    }
}

/// Every acknowledged message's `message.created` reached the receiver, any
/// copies under one `webhook-id`. Returns (events, deliveries).
async fn check_delivered(receiver: &Receiver, ledger: &Ledger) -> (usize, usize) {
    let wanted: BTreeSet<String> = ledger
        .acked
        .values()
        .flatten()
        .flat_map(|acked| acked.ids.iter().cloned())
        .collect();
    let message_of = |request: &crate::support::receiver::Received| {
        request.json()["data"]["message_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let received = receiver
        .wait_for_within("every message.created", DEADLINE * 6, |received| {
            let delivered: BTreeSet<String> = received
                .iter()
                .filter(|request| request.delivered())
                .map(message_of)
                .collect();
            wanted.is_subset(&delivered)
        })
        .await;
    let mut webhook_ids: HashMap<String, BTreeSet<String>> = HashMap::new();
    let delivered: Vec<_> = received
        .iter()
        .filter(|request| request.delivered())
        .collect();
    for request in &delivered {
        webhook_ids
            .entry(message_of(request))
            .or_default()
            .insert(request.header("webhook-id").to_owned());
    }
    assert!(
        webhook_ids.values().all(|ids| ids.len() == 1),
        "a copy carries the same webhook-id"
    );
    (webhook_ids.len(), delivered.len())
}
