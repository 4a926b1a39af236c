#!/usr/bin/env python3
"""Reads the run directories benches/load/run.sh wrote and prints its one table.

Each run directory holds `meta.env` (what run.sh measured around the run: the proxy's CPU ticks,
memory samples, wall times), SIPp's statistics files (`uac.csv`, `primary.csv`,
`secondary.csv`), SIPp's response-time samples (`*_rtt.csv`) and, with --latency, a packet
capture of the loopback (`capture.pcap`) from which the time inside the proxy is measured with
kernel timestamps.

  report.py table DIR...       the table (DIRs in the order run; pointsman/Kamailio pairs at the
                               same rate get a ratio row)
  report.py check DIR          exit 0 if the run was clean (<= 0.1 % failed calls, no unexpected
                               message, achieved rate >= 95 % of the target), 1 if not
  report.py progress CSV       one progress line from a SIPp statistics file being written
  report.py timeline DIR       the run as a picture (SVG on standard output): calls per second
                               reaching each trunk, answered and failed, over the run
Only the Python 3 standard library is used.
"""

import glob
import os
import struct
import sys

CLEAN_FAILED_RATIO = 0.001
CLEAN_ACHIEVED_RATIO = 0.95


# ---- SIPp statistics --------------------------------------------------------------------------

def sipp_rows(path):
    """Rows of a SIPp -trace_stat file as dicts (column name -> text)."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    except OSError:
        return []
    if not lines:
        return []
    header = lines[0].split(";")
    rows = []
    for line in lines[1:]:
        values = line.split(";")
        if len(values) >= len(header) - 1:
            rows.append(dict(zip(header, values)))
    return rows


def num(row, key, default=0.0):
    try:
        return float(row.get(key, "").strip())
    except (ValueError, AttributeError):
        return default


def elapsed_s(row, key="ElapsedTime(C)"):
    """SIPp writes durations as HH:MM:SS:uuuuuu."""
    text = row.get(key, "").strip()
    parts = text.split(":")
    try:
        if len(parts) == 4:
            h, m, s, us = (int(p) for p in parts)
            return h * 3600 + m * 60 + s + us / 1e6
        if len(parts) == 3:
            h, m, s = parts
            return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        pass
    return 0.0


def last(rows):
    return rows[-1] if rows else {}


UNEXPECTED = ("FailedUnexpectedMessage(C)",)


def sipp_summary(run):
    uac = sipp_rows(os.path.join(run, "uac.csv"))
    uas = [sipp_rows(os.path.join(run, n)) for n in ("primary.csv", "secondary.csv")]
    end = last(uac)
    created = num(end, "TotalCallCreated")
    ok = num(end, "SuccessfulCall(C)")
    failed = num(end, "FailedCall(C)")
    retrans = num(end, "Retransmissions(C)") + sum(num(last(r), "Retransmissions(C)") for r in uas)
    unexpected = sum(num(end, k) for k in UNEXPECTED) + sum(
        num(last(r), k) for r in uas for k in UNEXPECTED
    )
    out_of_call = num(end, "OutOfCallMsgs(C)") + sum(num(last(r), "OutOfCallMsgs(C)") for r in uas)
    uas_failed = sum(num(last(r), "FailedCall(C)") for r in uas)
    # Achieved rate: calls created per second over the full periods during which SIPp was still
    # creating calls (SIPp writes a row every second).
    target = created
    creating = [r for r in uac if num(r, "TotalCallCreated") < target]
    achieved = 0.0
    if len(creating) >= 2:
        a, b = creating[0], creating[-1]
        dt = elapsed_s(b) - elapsed_s(a)
        if dt > 0:
            achieved = (num(b, "TotalCallCreated") - num(a, "TotalCallCreated")) / dt
    if achieved == 0.0 and end:
        t = elapsed_s(end)
        achieved = created / t if t > 0 else 0.0
    return {
        "created": created,
        "ok": ok,
        "failed": failed,
        "retrans": retrans,
        "unexpected": unexpected,
        "out_of_call": out_of_call,
        "uas_failed": uas_failed,
        "achieved": achieved,
        "primary_calls": num(last(uas[0]), "IncomingCall(C)"),
        "secondary_calls": num(last(uas[1]), "IncomingCall(C)"),
    }


def rtt_samples_ms(run):
    """SIPp -trace_rtt samples (INVITE sent -> 200 received at the carrier), in ms. SIPp's clock
    has 1 ms resolution, so these only tell milliseconds apart."""
    samples = []
    for path in glob.glob(os.path.join(run, "*_rtt.csv")):
        with open(path, encoding="latin-1") as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    try:
                        samples.append(float(parts[1]))
                    except ValueError:
                        pass
    return samples


# ---- packet capture (kernel timestamps) ---------------------------------------------------------

def pcap_messages(path):
    """(time in s, src port, dst port, payload) of every UDP datagram in a pcap file (Ethernet
    or Linux cooked link type, IPv4)."""
    try:
        f = open(path, "rb")
    except OSError:
        return
    with f:
        head = f.read(24)
        if len(head) < 24:
            return
        magic = struct.unpack("<I", head[:4])[0]
        if magic == 0xA1B2C3D4:
            endian, scale = "<", 1e-6
        elif magic == 0xA1B23C4D:
            endian, scale = "<", 1e-9
        elif magic == 0xD4C3B2A1:
            endian, scale = ">", 1e-6
        elif magic == 0x4D3CB2A1:
            endian, scale = ">", 1e-9
        else:
            return
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        link_len = {1: 14, 113: 16, 276: 20}.get(linktype)
        if link_len is None:
            return
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _orig = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            if len(data) < incl:
                return
            ip = data[link_len:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            udp = ip[ihl:]
            if len(udp) < 8:
                continue
            sport, dport = struct.unpack(">HH", udp[:4])
            yield sec + frac * scale, sport, dport, udp[8:]


def sip_fields(payload):
    """(first line, Call-ID, CSeq method) of a SIP message."""
    head = payload.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    call_id = cseq = b""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"call-id", b"i"):
            call_id = value.strip()
        elif name == b"cseq":
            cseq = value.strip().split(b" ")[-1]
    return lines[0], call_id, cseq


def capture_latency(run, ports):
    """Per call, from the first copy of each message on the wire: the time inside the proxy for
    the INVITE (carrier -> proxy, proxy -> destination) and for the 200 (destination -> proxy,
    proxy -> carrier), and the setup time the carrier saw (its INVITE -> the 200 it got), in s."""
    proxy, carrier = ports["proxy"], ports["carrier"]
    first = {}
    for t, sport, dport, payload in pcap_messages(os.path.join(run, "capture.pcap")):
        line, call_id, cseq = sip_fields(payload)
        if not call_id:
            continue
        if line.startswith(b"INVITE "):
            kind = "inv_in" if (sport, dport) == (carrier, proxy) else (
                "inv_out" if sport == proxy else None)
        elif line.startswith(b"SIP/2.0 200") and cseq == b"INVITE":
            kind = "ok_out" if (sport, dport) == (proxy, carrier) else (
                "ok_in" if dport == proxy else None)
        else:
            kind = None
        if kind:
            first.setdefault((call_id, kind), t)
    calls = {}
    for (call_id, kind), t in first.items():
        calls.setdefault(call_id, {})[kind] = t
    invite, ok, added, setup = [], [], [], []
    for c in calls.values():
        if "inv_in" in c and "inv_out" in c:
            invite.append(c["inv_out"] - c["inv_in"])
        if "ok_in" in c and "ok_out" in c:
            ok.append(c["ok_out"] - c["ok_in"])
        if all(k in c for k in ("inv_in", "inv_out", "ok_in", "ok_out")):
            added.append(c["inv_out"] - c["inv_in"] + c["ok_out"] - c["ok_in"])
        if "inv_in" in c and "ok_out" in c:
            setup.append(c["ok_out"] - c["inv_in"])
    return {"invite": invite, "ok": ok, "added": added, "setup": setup}


def transit_buckets(run):
    """pointsman's own pointsman_udp_transit_seconds over the run: (upper bound s, datagrams)
    per bucket, cumulative, from the /metrics samples taken before and after; None without."""
    def read(name):
        try:
            with open(os.path.join(run, name)) as f:
                text = f.read()
        except OSError:
            return None
        out = {}
        prefix = 'pointsman_udp_transit_seconds_bucket{le="'
        for line in text.splitlines():
            if line.startswith(prefix):
                le = line[len(prefix):].split('"', 1)[0]
                out[le] = float(line.rsplit(" ", 1)[1])
        return out or None

    before, after = read("metrics_before.txt"), read("metrics_after.txt")
    if not before or not after:
        return None
    return sorted(
        (float("inf") if le == "+Inf" else float(le), n - before.get(le, 0.0))
        for le, n in after.items()
    )


def transit_pct(buckets, p):
    """The upper bound of the bucket the p-th percentile falls in (s), or None."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    need = p / 100.0 * buckets[-1][1]
    return next(le for le, n in buckets if n >= need)


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# ---- run metadata -----------------------------------------------------------------------------

def meta(run):
    m = {}
    try:
        with open(os.path.join(run, "meta.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k:
                    m[k] = v
    except OSError:
        pass
    return m


def fnum(m, k, default=0.0):
    try:
        return float(m.get(k, ""))
    except ValueError:
        return default


def summarize(run):
    m = meta(run)
    s = sipp_summary(run)
    tck = fnum(m, "clk_tck", 100.0) or 100.0
    cpu_s = (fnum(m, "cpu_after") - fnum(m, "cpu_before")) / tck
    wall = fnum(m, "wall_after") - fnum(m, "wall_before")
    calls = s["created"]
    ports = {"proxy": int(fnum(m, "port_proxy")), "carrier": int(fnum(m, "port_carrier"))}
    lat = capture_latency(run, ports) if os.path.exists(os.path.join(run, "capture.pcap")) else None
    rtt = rtt_samples_ms(run)
    target = fnum(m, "rate")
    idle, peak, after = fnum(m, "mem_idle_kb"), fnum(m, "mem_peak_kb"), fnum(m, "mem_after_kb")
    return {
        "run": run,
        "proxy": m.get("proxy", "?"),
        "target": target,
        "duration": fnum(m, "duration"),
        "calls": calls,
        "cpu_s": cpu_s,
        "cpu_per_1000": cpu_s / calls * 1000 if calls else None,
        "cpu_share": cpu_s / wall if wall > 0 else None,
        "uac_cpu_share": fnum(m, "uac_cpu_ticks") / tck / wall if wall > 0 else None,
        "uas_cpu_share": fnum(m, "uas_cpu_ticks") / tck / wall if wall > 0 else None,
        "mem_idle_mb": idle / 1024,
        "mem_peak_mb": peak / 1024,
        "mem_after_mb": after / 1024,
        "mem_per_1000cps_mb": (peak - idle) / 1024 / (target / 1000) if target else None,
        "hwm_mb": fnum(m, "hwm_kb") / 1024,
        "lat": lat,
        "transit": transit_buckets(run),
        "rtt": rtt,
        **s,
    }


def clean(r):
    calls = max(r["created"], 1)
    return (
        r["failed"] <= CLEAN_FAILED_RATIO * calls
        and r["unexpected"] == 0
        and r["uas_failed"] <= CLEAN_FAILED_RATIO * calls
        and r["achieved"] >= CLEAN_ACHIEVED_RATIO * r["target"]
        and r["created"] > 0
    )


# ---- table --------------------------------------------------------------------------------------

def f_us(v):
    return "-" if v is None else f"{v * 1e6:.0f}"


def f_ms(v):
    return "-" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.1f}")


def row_cells(r):
    lat = r["lat"]
    if lat and lat["setup"]:
        setup = f"{pct(lat['setup'], 50) * 1e3:.2f}/{pct(lat['setup'], 99) * 1e3:.2f}"
    elif r["rtt"]:
        setup = f"{f_ms(pct(r['rtt'], 50))}/{f_ms(pct(r['rtt'], 99))}*"
    else:
        setup = "-"

    def pair(key):
        if not lat or not lat[key]:
            return "-"
        return f"{f_us(pct(lat[key], 50))}/{f_us(pct(lat[key], 99))}"

    def own(q):
        le = transit_pct(r["transit"], q)
        if le is None:
            return "-"
        return ">250000" if le == float("inf") else f"<={le * 1e6:.0f}"

    transit = "-" if r["transit"] is None else f"{own(50)}/{own(99)}"

    return [
        r["proxy"],
        f"{r['target']:.0f}",
        f"{r['achieved']:.0f}",
        f"{r['ok']:.0f}",
        f"{r['failed']:.0f}",
        f"{r['retrans']:.0f}",
        f"{r['unexpected']:.0f}",
        setup,
        pair("invite"),
        pair("ok"),
        pair("added"),
        transit,
        "-" if r["cpu_per_1000"] is None else f"{r['cpu_per_1000']:.3f}",
        "-" if r["cpu_share"] is None else f"{r['cpu_share'] * 100:.0f}%",
        "-" if r["uac_cpu_share"] is None else
        f"{r['uac_cpu_share'] * 100:.0f}%/{(r['uas_cpu_share'] or 0) * 100:.0f}%",
        f"{r['mem_idle_mb']:.0f}/{r['mem_peak_mb']:.0f}/{r['mem_after_mb']:.0f}",
        "-" if r["mem_per_1000cps_mb"] is None else f"{r['mem_per_1000cps_mb']:.1f}",
        "yes" if clean(r) else "NO",
    ]


HEADERS = [
    "proxy",
    "target/s",
    "achieved/s",
    "calls ok",
    "failed",
    "retrans",
    "unexpected",
    "INVITE->200 p50/p99 ms",
    "in-proxy INVITE p50/p99 us",
    "in-proxy 200 p50/p99 us",
    "added p50/p99 us",
    "own transit p50/p99 us",
    "CPU s/1000 calls",
    "proxy CPU",
    "SIPp UAC/UAS CPU",
    "mem idle/peak/after MB",
    "MB per 1000 calls/s",
    "clean",
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def ratio_cells(p, k):
    def lat_ratio(key, q):
        if not p["lat"] or not k["lat"] or not p["lat"][key] or not k["lat"][key]:
            return "-"
        return ratio(pct(p["lat"][key], q), pct(k["lat"][key], q))

    def both(key):
        a, b = lat_ratio(key, 50), lat_ratio(key, 99)
        return "-" if a == b == "-" else f"{a}/{b}"

    setup = both("setup")
    return [
        "ratio p/k",
        "",
        ratio(p["achieved"], k["achieved"]),
        "",
        "",
        "",
        "",
        setup,
        both("invite"),
        both("ok"),
        both("added"),
        "",
        ratio(p["cpu_per_1000"], k["cpu_per_1000"]),
        ratio(p["cpu_share"], k["cpu_share"]),
        "",
        ratio(p["mem_peak_mb"] - p["mem_idle_mb"], k["mem_peak_mb"] - k["mem_idle_mb"]),
        ratio(p["mem_per_1000cps_mb"], k["mem_per_1000cps_mb"]),
        "",
    ]


def render(rows, markdown):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        if markdown:
            out.append("| " + " | ".join(r) + " |")
            if n == 0:
                out.append("|" + "|".join("---" for _ in r) + "|")
        else:
            out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def table(runs, markdown=False):
    rs = [summarize(r) for r in runs]
    rows = [HEADERS]
    for i, r in enumerate(rs):
        rows.append(row_cells(r))
        prev = rs[i - 1] if i else None
        if prev and prev["target"] == r["target"] and {prev["proxy"], r["proxy"]} == {"pointsman", "kamailio"}:
            p, k = (prev, r) if prev["proxy"] == "pointsman" else (r, prev)
            rows.append(ratio_cells(p, k))
    text = render(rows, markdown)
    notes = [
        "INVITE->200: the carrier's INVITE to the 200 it received, from the capture (kernel "
        "timestamps) when --latency was on; '*' = SIPp's own samples, 1 ms resolution.",
        "in-proxy: first copy of the message into the proxy -> first copy out of it (capture). "
        "added = INVITE + 200 in-proxy time of the same call.",
        "own transit: pointsman's own pointsman_udp_transit_seconds over the run (kernel receive "
        "timestamp of every datagram that made it send -> the send handed to the kernel), as the "
        "upper bound of the bucket the percentile falls in; needs no capture, so it holds at rates "
        "the machine cannot also capture.",
        "CPU s/1000 calls: the proxy's utime+stime (all its processes) over the run / calls. "
        "proxy CPU, SIPp UAC/UAS CPU (the carrier, the primary trunk): share of one core over the run.",
        "mem: PSS summed over the proxy's processes (= RSS for pointsman), idle before the run, "
        "peak sampled each second, and after the run settled; MB per 1000 calls/s = (peak - idle) "
        "/ (target / 1000).",
        "clean: <= 0.1 % failed calls, no unexpected message, achieved >= 95 % of target.",
    ]
    return text + "\n\n" + "\n".join(("- " if markdown else "  ") + n for n in notes)


def progress(csv):
    end = last(sipp_rows(csv))
    if not end:
        return "waiting for SIPp..."
    return (
        f"{elapsed_s(end):5.0f}s  created {num(end, 'TotalCallCreated'):.0f}  "
        f"ok {num(end, 'SuccessfulCall(C)'):.0f}  failed {num(end, 'FailedCall(C)'):.0f}  "
        f"open {num(end, 'CurrentCall'):.0f}  retrans {num(end, 'Retransmissions(C)'):.0f}  "
        f"rate {num(end, 'CallRate(P)'):.0f}/s"
    )


# ---- timeline picture -------------------------------------------------------------------------

TIMELINE_SERIES = (
    # (label, file, column, colour)
    ("INVITEs to the primary", "primary.csv", "IncomingCall(C)", "#2e8b57"),
    ("INVITEs to the secondary", "secondary.csv", "IncomingCall(C)", "#2f6db5"),
    ("calls answered and ended", "uac.csv", "SuccessfulCall(C)", "#7f8c8d"),
    ("calls failed", "uac.csv", "FailedCall(C)", "#c0392b"),
)


def per_second(rows, column):
    """(elapsed s, per-second rate) from a cumulative SIPp column, one point per row."""
    points = []
    prev = None
    for r in rows:
        t, v = elapsed_s(r), num(r, column)
        if prev is not None and t > prev[0]:
            points.append((t, (v - prev[1]) / (t - prev[0])))
        prev = (t, v)
    return points


def timeline(run):
    """The run's SVG: one line per series of TIMELINE_SERIES, time across, calls/s up."""
    series = []
    for label, name, column, colour in TIMELINE_SERIES:
        points = per_second(sipp_rows(os.path.join(run, name)), column)
        series.append((label, colour, points))
    span = max([p[0] for _, _, pts in series for p in pts] + [1.0])
    top = max([p[1] for _, _, pts in series for p in pts] + [1.0]) * 1.1
    width, height, left, right, up, down = 960.0, 360.0, 60.0, 20.0, 30.0, 70.0
    plot_w, plot_h = width - left - right, height - up - down

    def x(t):
        return left + plot_w * t / span

    def y(v):
        return up + plot_h * (1.0 - max(v, 0.0) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{left:.0f}" y="18" fill="#444">{os.path.basename(os.path.normpath(run))}: '
        "calls per second over the run</text>",
        f'<line x1="{left}" y1="{up + plot_h}" x2="{left + plot_w}" y2="{up + plot_h}" stroke="#888"/>',
        f'<line x1="{left}" y1="{up}" x2="{left}" y2="{up + plot_h}" stroke="#888"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = top / 1.1 * frac
        out.append(
            f'<text x="{left - 6:.1f}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#444">{v:.0f}/s</text>'
        )
    step = 30 if span > 120 else 10 if span > 30 else 5
    t = 0
    while t <= span:
        out.append(
            f'<text x="{x(t):.1f}" y="{up + plot_h + 16:.1f}" text-anchor="middle" fill="#444">{t}s</text>'
        )
        t += step
    for label, colour, points in series:
        if points:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
            out.append(
                f'<polyline class="series" data-label="{label}" points="{coords}" fill="none" '
                f'stroke="{colour}" stroke-width="1.5"/>'
            )
    lx = left
    for label, colour, _ in series:
        out.append(
            f'<line x1="{lx:.1f}" y1="{height - 22:.1f}" x2="{lx + 18:.1f}" y2="{height - 22:.1f}" '
            f'stroke="{colour}" stroke-width="3"/><text x="{lx + 24:.1f}" y="{height - 18:.1f}">{label}</text>'
        )
        lx += 24 + 7 * len(label) + 20
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) >= 2 and argv[1] == "table":
        markdown = "--markdown" in argv
        runs = [a for a in argv[2:] if a != "--markdown"]
        print(table(runs, markdown))
        return 0
    if len(argv) == 3 and argv[1] == "check":
        r = summarize(argv[2])
        print(
            f"{r['proxy']} {r['target']:.0f}/s: achieved {r['achieved']:.0f}/s, ok {r['ok']:.0f}, "
            f"failed {r['failed']:.0f}, unexpected {r['unexpected']:.0f}, proxy CPU "
            f"{(r['cpu_share'] or 0) * 100:.0f}%, SIPp UAC/UAS CPU {(r['uac_cpu_share'] or 0) * 100:.0f}%/"
            f"{(r['uas_cpu_share'] or 0) * 100:.0f}% "
            f"-> {'clean' if clean(r) else 'NOT clean'}"
        )
        return 0 if clean(r) else 1
    if len(argv) == 3 and argv[1] == "timeline":
        sys.stdout.write(timeline(argv[2]))
        return 0
    if len(argv) == 3 and argv[1] == "progress":
        print(progress(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
