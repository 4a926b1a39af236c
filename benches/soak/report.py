#!/usr/bin/env python3
"""Reads a run directory of benches/soak/run.sh and prints the soak's report (Markdown).

Four observers, each counted on its own:
  - SIPp: the carrier's calls (successful, failed and why) and the clouds' (carrier.csv,
    primary.csv, secondary.csv; failed Call-IDs from carrier_uac_*_calldebug.log);
  - pointsman's /metrics before and after the calls (metrics_before.txt, metrics_after.txt);
  - the impairment relay: its counts per link and direction (relay.json) and its log of every
    SIP datagram (relay.log, see benches/tools/src/bin/impair.rs), from which the report proves:
      * CANCEL before reroute: for every call whose INVITE went to both clouds, a CANCEL to the
        first left pointsman before the INVITE to the second (kernel receive timestamps at the
        relay, in send order), unless the first had already given a final answer;
      * ghost calls: a carrier that got 2xx with two different To tags (two clouds' answers), or
        a cloud whose 2xx reached pointsman and which never got a BYE from pointsman, although
        the carrier got that 2xx and its BYE reached pointsman, or the 2xx was never relayed;
      * why each failed call failed: what the network did to its datagrams (lost, blackholed by
        the flap); a failed call with no impaired datagram is unexplained and counts against
        pointsman;
  - pointsman's RSS every 10 s (rss.txt).

  report.py report DIR
  report.py selftest           the checks above, each shown to catch its fault on a made-up log
Only the Python 3 standard library is used.
"""

import glob
import importlib.util
import json
import os
import re
import sys

# The load bench's readers of SIPp's statistics files and of meta.env.
_spec = importlib.util.spec_from_file_location(
    "load_report", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load", "report.py"))
_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_load)
last, meta, num, sipp_rows = _load.last, _load.meta, _load.num, _load.sipp_rows

CLOUDS = ("primary", "secondary")
# The soak carrier's steps (carrier_uac.xml): where a call was when SIPp aborted it.
CARRIER_STEP = {0: "INVITE", 1: "INVITE", 2: "INVITE", 3: "INVITE", 4: "INVITE (no 2xx)",
                5: "ACK", 6: "hold", 7: "BYE", 8: "BYE (no 200)"}


def sipp_counts(run, name):
    end = last(sipp_rows(os.path.join(run, name + ".csv")))
    return {k[:-3]: num(end, k) for k in end if k.endswith("(C)")} | {
        "CurrentCall": num(end, "CurrentCall")
    }


def failed_calls(run):
    """Call-ID -> SIPp step at which the carrier aborted it."""
    out = {}
    for path in glob.glob(os.path.join(run, "carrier_uac_*_calldebug.log")):
        with open(path, encoding="latin-1") as f:
            for line in f:
                m = re.search(r"Aborting call (\S+) \(index (\d+)\)", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    return out


def metrics(path):
    """{(name, labels): value} of a Prometheus text file."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line.strip())
                if m:
                    out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    except OSError:
        pass
    return out


def metric_delta(run, name):
    before = metrics(os.path.join(run, "metrics_before.txt"))
    after = metrics(os.path.join(run, "metrics_after.txt"))
    return {lab: v - before.get((n, lab), 0.0) for (n, lab), v in after.items() if n == name}


def by_label(run, name, only=None):
    """`labels value, ...` of a metric's non-zero series over the run (`only`: that label's value)."""
    parts = []
    for lab, v in sorted(metric_delta(run, name).items()):
        if not v:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', lab))
        text = pairs.get(only, lab) if only else " ".join(f"{k}={x}" for k, x in pairs.items())
        parts.append(f"{text} {fmt(v)}")
    return ", ".join(parts) or "0"


class Call:
    __slots__ = ("carrier_2xx", "invite", "cancel", "final", "answered", "bye", "impaired",
                 "reached", "relayed_2xx", "carrier_bye")

    def __init__(self):
        self.carrier_2xx = set()  # To tags of 2xx delivered to the carrier
        self.invite = {}  # cloud -> first INVITE pointsman sent it (ns)
        self.cancel = {}  # cloud -> first CANCEL pointsman sent it
        self.final = {}  # cloud -> first final non-2xx answer to INVITE delivered to pointsman
        self.answered = {}  # (cloud, tag) -> True once a copy of its 2xx reached pointsman
        self.bye = set()  # (cloud, tag) pointsman sent BYE to
        self.impaired = set()  # "lost", "flap"
        self.reached = set()  # (cloud, "INVITE" | "CANCEL") of which a copy was delivered
        self.relayed_2xx = set()  # To tags of 2xx pointsman sent the carrier (delivered or not)
        self.carrier_bye = False  # a copy of the carrier's BYE reached pointsman


def read_log(run):
    calls = {}
    with open(os.path.join(run, "relay.log"), encoding="latin-1") as f:
        for line in f:
            p = line.split()
            if len(p) != 9:
                continue
            t, link, direction, copies, why, kind, cseq, cid, tag = p
            t, copies = int(t), int(copies)
            c = calls.get(cid)
            if c is None:
                c = calls[cid] = Call()
            if why != "-":
                c.impaired.add(why)
            if link == "carrier":
                if direction == "back" and cseq == "INVITE" and kind.startswith("2"):
                    c.relayed_2xx.add(tag)
                    if copies:
                        c.carrier_2xx.add(tag)
                elif direction == "fwd" and kind == "BYE" and copies:
                    c.carrier_bye = True
                continue
            if direction == "fwd":  # pointsman -> cloud
                if copies and kind in ("INVITE", "CANCEL"):
                    c.reached.add((link, kind))
                if kind == "INVITE":
                    c.invite[link] = min(t, c.invite.get(link, t))
                elif kind == "CANCEL":
                    c.cancel[link] = min(t, c.cancel.get(link, t))
                elif kind == "BYE":
                    c.bye.add((link, tag))
            elif cseq == "INVITE" and kind.isdigit() and copies:  # cloud -> pointsman
                code = int(kind)
                if 200 <= code < 300:
                    c.answered[(link, tag)] = True
                elif code >= 300:
                    c.final[link] = min(t, c.final.get(link, t))
            elif cseq == "INVITE" and kind.startswith("2"):
                c.answered.setdefault((link, tag), False)
    return calls


def analyse(calls):
    a = {"reroutes": 0, "cancel_first": 0, "after_final": 0, "violations": [],
         "carrier_ghosts": [], "cloud_answered": 0, "cloud_bye": 0, "cloud_no_bye": [],
         "no_bye_2xx_lost": 0, "no_bye_carrier_bye_lost": 0,
         "cloud_2xx_never_delivered": 0, "late_2xx_torn_down": 0, "orphan_cancels": 0}
    for cid, c in calls.items():
        if len(c.carrier_2xx) > 1:
            a["carrier_ghosts"].append(cid)
        if len(c.invite) == 2:
            first, second = sorted(c.invite, key=c.invite.get)
            a["reroutes"] += 1
            at = c.invite[second]
            if c.cancel.get(first, at + 1) < at:
                a["cancel_first"] += 1
            elif c.final.get(first, at + 1) < at:
                a["after_final"] += 1
            else:
                a["violations"].append(cid)
        for cloud in CLOUDS:
            if (cloud, "CANCEL") in c.reached and (cloud, "INVITE") not in c.reached:
                a["orphan_cancels"] += 1
        for (cloud, tag), delivered in c.answered.items():
            if not delivered:
                a["cloud_2xx_never_delivered"] += 1
                continue
            a["cloud_answered"] += 1
            if (cloud, tag) in c.bye:
                a["cloud_bye"] += 1
                if tag not in c.carrier_2xx:
                    a["late_2xx_torn_down"] += 1
            elif tag in c.relayed_2xx and tag not in c.carrier_2xx:
                # Relayed, but no copy reached the carrier: nothing comes back to end it with.
                a["no_bye_2xx_lost"] += 1
            elif tag in c.carrier_2xx and not c.carrier_bye:
                a["no_bye_carrier_bye_lost"] += 1
            else:
                a["cloud_no_bye"].append(cid)
    return a


def explain(calls, failed):
    """Why each failed call failed: {(step, cause): count}, and the unexplained Call-IDs."""
    causes, unexplained = {}, []
    for cid, step in failed.items():
        c = calls.get(cid)
        why = c.impaired if c else set()
        if c and c.relayed_2xx and not c.carrier_2xx:
            cause = "every copy of the 2xx pointsman relayed lost on the carrier's link" + (
                ", the cloud's retransmissions blackholed" if "flap" in why else "")
        elif c and c.answered and not any(c.answered.values()):
            cause = "the cloud answered; no copy of its 2xx reached pointsman (" + (
                "blackholed by the flap" if "flap" in why else "lost") + ")"
        elif c and c.invite and not any((cl, "INVITE") in c.reached for cl in c.invite):
            cause = "no copy of pointsman's INVITE reached a cloud (" + (
                "blackholed by the flap" if "flap" in why else "lost") + ")"
        elif "flap" in why:
            cause = "datagrams blackholed on the primary's link (flap)"
        elif "lost" in why:
            cause = "datagrams lost"
        else:
            cause = "no impaired datagram: unexplained"
            unexplained.append(cid)
        key = (CARRIER_STEP.get(step, f"step {step}"), cause)
        causes[key] = causes.get(key, 0) + 1
    return causes, unexplained


def rss(run):
    out = []
    try:
        with open(os.path.join(run, "rss.txt")) as f:
            for line in f:
                s, kb = line.split()
                out.append((int(s), int(kb) / 1024))
    except (OSError, ValueError):
        pass
    return out


def fmt(n):
    return f"{n:,.0f}"


def report(run):
    m = meta(run)
    carrier = sipp_counts(run, "carrier")
    clouds = {c: sipp_counts(run, c) for c in CLOUDS}
    failed = failed_calls(run)
    calls = read_log(run)
    a = analyse(calls)
    causes, unexplained = explain(calls, failed)
    out = []
    w = out.append
    w(f"Soak on `{m.get('commit', '?')}`: {m.get('rate')} calls/s for {m.get('duration')} s, seed "
      f"{m.get('seed')}; every link, both directions: loss {m.get('loss')}, duplication "
      f"{m.get('dup')}, reordering {m.get('reorder')} (held back 40 ms), jitter 0..{m.get('jitter')}; "
      f"the primary's link blackholed every other {m.get('flap')} s.")
    w("")
    w("| observer | figure | value |")
    w("|---|---|---|")
    w(f"| SIPp carrier | calls placed | {fmt(carrier.get('OutgoingCall', 0))} |")
    w(f"| SIPp carrier | calls completed (2xx, ACK, BYE answered) | {fmt(carrier.get('SuccessfulCall', 0))} |")
    kinds = ", ".join(f"{k[6:]} {fmt(v)}" for k, v in carrier.items()
                      if k.startswith("Failed") and k != "FailedCall" and v)
    w(f"| SIPp carrier | calls failed | **{fmt(carrier.get('FailedCall', 0))}**{' (' + kinds + ')' if kinds else ''} |")
    w(f"| SIPp carrier | retransmissions | {fmt(carrier.get('Retransmissions', 0))} |")
    for c in CLOUDS:
        k = clouds[c]
        w(f"| SIPp {c} | calls answered and ended by BYE / failed / open at the end | "
          f"{fmt(k.get('SuccessfulCall', 0))} / {fmt(k.get('FailedCall', 0))} / {fmt(k.get('CurrentCall', 0))} |")
    w(f"| pointsman | calls by outcome | {by_label(run, 'pointsman_calls_total', 'outcome')} |")
    w(f"| pointsman | failovers | {by_label(run, 'pointsman_failovers_total')} |")
    w(f"| pointsman | CANCELs sent | {fmt(sum(metric_delta(run, 'pointsman_cancels_sent_total').values()))} |")
    w(f"| pointsman | ghost calls torn down (late 2xx ACKed + BYE) | "
      f"{fmt(sum(metric_delta(run, 'pointsman_ghost_calls_torn_down_total').values()))} |")
    w(f"| pointsman | dropped without an answer | {by_label(run, 'pointsman_dropped_total')} |")
    w(f"| relay log | reroutes (INVITE to both clouds) | {fmt(a['reroutes'])} |")
    w(f"| relay log | CANCEL to the first cloud before the INVITE to the second | "
      f"**{fmt(a['cancel_first'])}** (after the first's final answer: {fmt(a['after_final'])}; "
      f"neither: **{len(a['violations'])}**) |")
    w(f"| relay log | ghost calls at the carrier (2xx of two clouds) | **{len(a['carrier_ghosts'])}** |")
    w(f"| relay log | clouds' 2xx that reached pointsman / got a BYE from it | "
      f"{fmt(a['cloud_answered'])} / {fmt(a['cloud_bye'])} |")
    w(f"| relay log | ... without BYE: the 2xx relayed, no copy reached the carrier / the carrier's "
      f"BYE never reached pointsman / **neither (ghost)** | {fmt(a['no_bye_2xx_lost'])} / "
      f"{fmt(a['no_bye_carrier_bye_lost'])} / **{len(a['cloud_no_bye'])}** |")
    w(f"| relay log | of those BYEs, late 2xx torn down (not the carrier's answer) | {fmt(a['late_2xx_torn_down'])} |")
    w(f"| relay log | clouds' 2xx never delivered to pointsman (every copy lost or blackholed) | "
      f"{fmt(a['cloud_2xx_never_delivered'])} |")
    w(f"| relay log | CANCELs that reached a cloud which never got the INVITE (the INVITE's every "
      f"copy lost or blackholed; a SIPp UAS holds each as an open call) | {fmt(a['orphan_cancels'])} |")
    samples = rss(run)
    if len(samples) > 2:
        def at(t):
            return min(samples[1:-1], key=lambda x: abs(x[0] - t))
        calls = [x for x in samples[1:-1]]
        pts = [at(60), at(calls[-1][0] // 2), calls[-1]]
        steady = [mb for t, mb in calls if t >= 120]
        w(f"| pointsman | RSS before the calls; at {pts[0][0]} s / {pts[1][0]} s / {pts[2][0]} s; "
          f"{samples[-1][0] - pts[2][0]} s after the last call | {samples[0][1]:.1f}; "
          + " / ".join(f"{mb:.1f}" for _, mb in pts) + f"; {samples[-1][1]:.1f} MB |")
        if steady:
            early = [mb for t, mb in calls if 120 <= t < 300]
            late = [mb for t, mb in calls if t >= calls[-1][0] - 180]
            w(f"| pointsman | RSS every 10 s from 120 s to the last call: min / max; mean over "
              f"120-300 s / the last 180 s | {min(steady):.1f} / {max(steady):.1f}; "
              f"{sum(early) / max(len(early), 1):.1f} / {sum(late) / max(len(late), 1):.1f} MB |")
    w("")
    w("Relay, per link and direction (`fwd`: carrier→pointsman, pointsman→cloud):")
    w("")
    w("| link | dir | received | delivered | lost | blackholed | duplicated | held back |")
    w("|---|---|---|---|---|---|---|---|")
    try:
        with open(os.path.join(run, "relay.json")) as f:
            for r in json.load(f):
                k = r["counts"]
                w(f"| {r['link']} | {r['dir']} | {fmt(k['received'])} | {fmt(k['delivered'])} | "
                  f"{fmt(k['lost'])} | {fmt(k['blackholed'])} | {fmt(k['duplicated'])} | {fmt(k['held_back'])} |")
    except (OSError, ValueError, KeyError):
        w("| (relay.json missing) |")
    w("")
    w(f"Failed calls at the carrier ({fmt(len(failed))} aborted in SIPp's call debug log), by "
      "where the call was and what the network did to its datagrams:")
    w("")
    w("| where | cause | calls |")
    w("|---|---|---|")
    for (step, cause), n in sorted(causes.items(), key=lambda x: -x[1]):
        w(f"| {step} | {cause} | {fmt(n)} |")
    if unexplained:
        w("")
        w("Unexplained failed calls (first 20): " + ", ".join(unexplained[:20]))
    for name, ids in (("CANCEL-order violations", a["violations"]),
                      ("carrier ghost calls", a["carrier_ghosts"]),
                      ("ghost calls at the clouds (no BYE)", a["cloud_no_bye"])):
        if ids:
            w("")
            w(f"{name} (first 20): " + ", ".join(ids[:20]))
    return "\n".join(out)


def selftest():
    """The checks on made-up relay logs: a clean failover passes; a reroute without CANCEL, two
    clouds' 2xx at the carrier and an answered cloud left without BYE are each caught."""
    import tempfile

    def run(lines):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "relay.log"), "w") as f:
                f.write("".join(f"{line}\n" for line in lines))
            return analyse(read_log(d))

    clean = ["100 primary fwd 0 flap INVITE INVITE c1 -", "300 primary fwd 0 flap CANCEL CANCEL c1 -",
             "301 secondary fwd 1 - INVITE INVITE c1 -", "400 secondary back 1 - 200 INVITE c1 s",
             "410 carrier back 1 - 200 INVITE c1 s", "420 carrier fwd 1 - BYE BYE c1 s",
             "430 secondary fwd 1 - BYE BYE c1 s"]
    a = run(clean)
    assert (a["reroutes"], a["cancel_first"], a["violations"]) == (1, 1, []), a
    assert not a["carrier_ghosts"] and not a["cloud_no_bye"], a
    late_cancel = [ln.replace("300 primary", "302 primary") for ln in clean]
    assert run(late_cancel)["violations"] == ["c1"]
    two_answers = clean + ["405 primary back 1 - 200 INVITE c1 p", "411 carrier back 1 - 200 INVITE c1 p"]
    a = run(two_answers)
    assert a["carrier_ghosts"] == ["c1"] and a["cloud_no_bye"] == ["c1"], a
    no_bye = [ln for ln in clean if "secondary fwd 1 - BYE" not in ln]
    assert run(no_bye)["cloud_no_bye"] == ["c1"]
    lost_2xx = [ln.replace("410 carrier back 1 -", "410 carrier back 0 lost") for ln in no_bye]
    a = run([ln for ln in lost_2xx if "carrier fwd" not in ln])
    assert (a["cloud_no_bye"], a["no_bye_2xx_lost"]) == ([], 1), a
    return "selftest: 5 checks passed"


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        print(report(argv[2]))
        return 0
    if len(argv) == 2 and argv[1] == "selftest":
        print(selftest())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
