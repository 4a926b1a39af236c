//! Calls an operator sees and ends, end to end: a pointsman process between a simulated carrier
//! and two simulated clouds on real loopback sockets, its calls listed and ended through the
//! admin API (`GET /calls`, `POST /calls/CALL-ID/end`) and the `pointsman calls` command.

mod support;

use pointsman::admin::{end_call, fetch_calls, http_request, CallFilter, CallStage};
use pointsman_sim::{Behaviour, Dir, Entry, Summary};
use std::time::Duration;
use support::{at, Setup, TwoClouds, ADMIN_PORT};

const WAIT: Duration = Duration::from_secs(5);
const REASON: &str = "SIP;cause=480;text=\"ended by operator\"";

/// Waits for `what` at `peer`, or fails with the journal and pointsman's log.
async fn expect(t: &TwoClouds, peer: &str, what: &str, pred: impl Fn(&Summary) -> bool) -> Entry {
    match t.journal.wait_for(peer, WAIT, pred).await {
        Some(e) => e,
        None => panic!("{peer} never received {what}\n{}", t.report()),
    }
}

/// Whether `peer` sent a message that matches.
fn sent(t: &TwoClouds, peer: &str, pred: impl Fn(&Summary) -> bool) -> bool {
    t.journal
        .entries()
        .iter()
        .any(|e| e.peer == peer && e.dir == Dir::Out && pred(&e.summary))
}

/// Runs `pointsman calls ARGS --admin ADDR`: its exit code and stdout (stderr on failure).
fn calls_command(admin: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .arg("calls")
        .args(args)
        .args(["--admin", admin])
        .output()
        .expect("run pointsman calls");
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    (out.status.code(), text)
}

fn filter(tweak: impl FnOnce(&mut CallFilter)) -> CallFilter {
    let mut f = CallFilter::default();
    tweak(&mut f);
    f
}

#[tokio::test]
async fn a_ringing_and_an_answered_call_are_listed_filtered_and_ended_through_the_api_and_the_cli()
{
    let t = TwoClouds::start(Setup {
        secondary: Behaviour::ring_forever(),
        provisional: "2s",
        ..Setup::default()
    })
    .await;
    let admin = at(t.ip, ADMIN_PORT).to_string();

    // An answered call at the primary, then one ringing there.
    t.carrier
        .invite(&t.carrier.invite_spec("answered-1"))
        .await
        .unwrap();
    expect(&t, "carrier", "200 to the INVITE", |s| {
        s.is_response(200, "INVITE") && s.call_id == "answered-1"
    })
    .await;
    t.primary
        .as_ref()
        .unwrap()
        .set_behaviour(Behaviour::ring_forever());
    let mut ringing = t.carrier.invite_spec("ringing-1");
    ringing.to_user = "+442079460000".into();
    ringing.from_user = "+15550001111".into();
    t.carrier.invite(&ringing).await.unwrap();
    expect(&t, "carrier", "180", |s| {
        s.is_response(180, "INVITE") && s.call_id == "ringing-1"
    })
    .await;

    // The admin API lists both, with their filters.
    let all = fetch_calls(&admin, &CallFilter::default(), None, WAIT).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let answered = all.iter().find(|c| c.call_id == "answered-1").unwrap();
    assert_eq!(answered.state, CallStage::Answered);
    assert_eq!(answered.route.as_deref(), Some("default"));
    assert_eq!(answered.destination.as_deref(), Some("primary"));
    assert_eq!(answered.from.as_deref(), Some("+15559870000"));
    assert_eq!(answered.to.as_deref(), Some("+15551230000"));
    let setup = all.iter().find(|c| c.call_id == "ringing-1").unwrap();
    assert_eq!(setup.state, CallStage::Setup);
    assert_eq!(setup.destination.as_deref(), Some("primary"));
    assert_eq!(setup.branch.as_deref(), Some("ringing"));
    let ids = |f: CallFilter| -> Vec<String> {
        let mut ids: Vec<String> = fetch_calls(&admin, &f, None, WAIT)
            .unwrap()
            .into_iter()
            .map(|c| c.call_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(filter(|f| f.number = Some("20 7946 0000".into()))),
        ["ringing-1"]
    );
    assert_eq!(
        ids(filter(|f| f.number = Some("+1 555 987 0000".into()))),
        ["answered-1"]
    );
    assert_eq!(
        ids(filter(|f| f.destination = Some("primary".into()))),
        ["answered-1", "ringing-1"]
    );
    assert!(ids(filter(|f| f.route = Some("other".into()))).is_empty());
    assert!(ids(filter(|f| f.min_age_secs = Some(3600))).is_empty());
    let one = http_request(&admin, "GET", "/calls/ringing-1", None, WAIT).unwrap();
    assert_eq!(one.status, 200, "{}", one.text());
    assert!(one.text().contains("\"state\":\"setup\""), "{}", one.text());

    // The command prints them as a table, filtered the same way.
    let (code, text) = calls_command(&admin, &[]);
    assert_eq!(code, Some(0), "{text}");
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("CALL-ID") && header.contains("DESTINATION"),
        "{text}"
    );
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{text}"))
            .to_string()
    };
    assert!(line("ringing-1").contains("setup (ringing)"), "{text}");
    assert!(line("answered-1").contains("answered"), "{text}");
    assert!(line("answered-1").contains("+15559870000"), "{text}");
    let (code, text) = calls_command(&admin, &["--number", "442079460000", "--route", "default"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ringing-1") && !text.contains("answered-1"),
        "{text}"
    );

    // The answered call ended with the command: BYE to both sides, each answers 200.
    let (code, text) = calls_command(&admin, &["end", "answered-1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("answered-1"), "{text}");
    for peer in ["carrier", "primary"] {
        let bye = expect(&t, peer, "BYE", |s| {
            s.is("BYE") && s.call_id == "answered-1"
        })
        .await;
        assert_eq!(
            bye.header("Reason").as_deref(),
            Some(REASON),
            "{}",
            bye.text()
        );
    }
    let bye_to_carrier = expect(&t, "carrier", "BYE", |s| s.is("BYE")).await;
    assert!(
        bye_to_carrier
            .first_line()
            .starts_with(&format!("BYE sip:+15559870000@{}", t.carrier.local_addr())),
        "the carrier's Contact: {}",
        bye_to_carrier.text()
    );
    for peer in ["carrier", "primary"] {
        let answered = async {
            while !sent(&t, peer, |s| {
                s.is_response(200, "BYE") && s.call_id == "answered-1"
            }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, answered)
            .await
            .unwrap_or_else(|_| panic!("{peer} did not answer the BYE\n{}", t.report()));
    }

    // The ringing call ended through the API: CANCEL to the cloud, 480 to the carrier.
    let r = http_request(&admin, "POST", "/calls/ringing-1/end", None, WAIT).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let cancel = expect(&t, "primary", "CANCEL", |s| {
        s.is("CANCEL") && s.call_id == "ringing-1"
    })
    .await;
    assert_eq!(cancel.header("Reason").as_deref(), Some(REASON));
    let final_ = expect(&t, "carrier", "480", |s| {
        s.is_response(480, "INVITE") && s.call_id == "ringing-1"
    })
    .await;
    assert_eq!(final_.header("Reason").as_deref(), Some(REASON));

    // Their 200s were taken: no BYE again; nothing left; a second end is 404.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for peer in ["carrier", "primary"] {
        assert_eq!(
            t.journal
                .count(peer, |s| s.is("BYE") && s.call_id == "answered-1"),
            1,
            "{}",
            t.report()
        );
    }
    assert_eq!(t.journal.count("secondary", |s| s.is("INVITE")), 0);
    assert!(fetch_calls(&admin, &CallFilter::default(), None, WAIT)
        .unwrap()
        .is_empty());
    let again = end_call(&admin, "ringing-1", None, WAIT).unwrap_err();
    assert!(again.to_string().contains("404"), "{again}");
    let (code, text) = calls_command(&admin, &["end", "answered-1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no call"), "{text}");
}
