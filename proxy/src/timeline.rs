//! A timeline picture of a drill (`pointsman drill --timeline FILE.svg`): one lane per
//! destination, coloured by its state over time (as the admin API reported it), a mark for every
//! call where it was answered (green: by the first destination tried; orange: after failing
//! over; red: failed), a hollow mark on each destination a call tried and left, and the phases
//! as labelled columns. Plain SVG text, no dependency: a browser, an image viewer or a README
//! shows it.
//!
//! It must not: measure anything itself; it draws what the drill's report says.

use std::fmt::Write;
use std::time::Duration;

/// One call as the drill reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineCall {
    /// When the carrier sent its INVITE, from the drill's start.
    pub at: Duration,
    /// Destinations that got its INVITE, in order.
    pub tried: Vec<String>,
    /// The destination whose answer the carrier got; `None`: the call failed.
    pub answered_by: Option<String>,
}

/// A destination's state from `at` on (as `pointsman status` names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub at: Duration,
    pub destination: String,
    pub state: String,
}

/// What the picture shows.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub length: Duration,
    /// Each phase's start and name.
    pub phases: Vec<(Duration, String)>,
    /// Lanes, top to bottom.
    pub destinations: Vec<String>,
    pub calls: Vec<TimelineCall>,
    pub states: Vec<StateChange>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 48.0;
const LANE: f64 = 34.0;
const LEGEND: f64 = 56.0;

/// The colour of a lane while its destination is in `state`.
fn state_fill(state: &str) -> &'static str {
    match state {
        "up" | "forced-up" => "#dff3e1",
        "down" => "#f8d7d5",
        "draining" => "#fdf0c8",
        "maintenance" => "#e2e2e2",
        _ => "#eef1f5",
    }
}

impl Timeline {
    /// The SVG document.
    pub fn render(&self) -> String {
        let lanes = self.destinations.len() + 1;
        let height = TOP + LANE * lanes as f64 + LEGEND;
        let span = self.length.as_secs_f64().max(0.001);
        let x = |at: Duration| LEFT + (WIDTH - LEFT - RIGHT) * (at.as_secs_f64() / span).min(1.0);
        let lane_y = |i: usize| TOP + LANE * i as f64;
        let mut svg = String::with_capacity(16 * 1024);
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>"
        );
        // Lanes, coloured by state over time.
        for (i, dest) in self.destinations.iter().enumerate() {
            let y = lane_y(i);
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 8.0,
                y + LANE / 2.0 + 4.0,
                escape(dest)
            );
            let mut changes: Vec<&StateChange> = self
                .states
                .iter()
                .filter(|s| &s.destination == dest)
                .collect();
            changes.sort_by_key(|s| s.at);
            let mut from = (Duration::ZERO, "probing");
            for c in changes {
                band(&mut svg, x(from.0), x(c.at), y, from.1);
                from = (c.at, c.state.as_str());
            }
            band(&mut svg, x(from.0), x(self.length), y, from.1);
        }
        let failed_lane = self.destinations.len();
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">failed</text>",
            LEFT - 8.0,
            lane_y(failed_lane) + LANE / 2.0 + 4.0
        );
        // Phases.
        for (at, name) in &self.phases {
            let px = x(*at);
            let _ = writeln!(
                svg,
                "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#888\" \
                 stroke-dasharray=\"3,3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#444\">{}</text>",
                TOP - 14.0,
                lane_y(lanes),
                px + 3.0,
                TOP - 18.0,
                escape(name)
            );
        }
        // Calls.
        let lane_of = |name: &str| self.destinations.iter().position(|d| d == name);
        for call in &self.calls {
            let cx = x(call.at);
            for left in call
                .tried
                .iter()
                .filter(|d| Some(*d) != call.answered_by.as_ref())
            {
                if let Some(i) = lane_of(left) {
                    let _ = writeln!(
                        svg,
                        "<circle class=\"tried\" cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"none\" \
                         stroke=\"#c0392b\" stroke-width=\"1.2\"/>",
                        lane_y(i) + LANE / 2.0
                    );
                }
            }
            let (i, fill, class) = match &call.answered_by {
                Some(d) => {
                    let first = call.tried.first() == Some(d);
                    let colour = if first { "#2e8b57" } else { "#e67e22" };
                    let class = if first { "answered" } else { "failed-over" };
                    (lane_of(d).unwrap_or(failed_lane), colour, class)
                }
                None => (failed_lane, "#c0392b", "failed"),
            };
            let _ = writeln!(
                svg,
                "<circle class=\"{class}\" cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\"/>",
                lane_y(i) + LANE / 2.0
            );
        }
        // Time axis and legend.
        let axis_y = lane_y(lanes) + 14.0;
        let step: u32 = if span > 120.0 {
            30
        } else if span > 30.0 {
            10
        } else {
            5
        };
        let mut t: u32 = 0;
        while f64::from(t) <= span {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\" fill=\"#444\">{t}s</text>",
                x(Duration::from_secs(u64::from(t)))
            );
            t += step;
        }
        let legend_y = axis_y + 22.0;
        let mut lx = LEFT;
        for (fill, stroke, label) in [
            ("#2e8b57", "none", "answered by the first destination"),
            ("#e67e22", "none", "answered after failover"),
            ("#c0392b", "none", "failed"),
            ("none", "#c0392b", "tried and left"),
        ] {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{stroke}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                lx,
                legend_y - 4.0,
                lx + 8.0,
                legend_y
            );
            lx += 8.0 + 7.0 * label.len() as f64 + 16.0;
        }
        for (state, label) in [("up", "up"), ("down", "down"), ("probing", "probing")] {
            let _ = writeln!(
                svg,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{}\" \
                 stroke=\"#bbb\"/><text x=\"{:.1}\" y=\"{legend_y:.1}\">{label}</text>",
                legend_y - 9.0,
                state_fill(state),
                lx + 18.0
            );
            lx += 18.0 + 7.0 * label.len() as f64 + 14.0;
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// A lane's background from `x0` to `x1` in the colour of `state`.
fn band(svg: &mut String, x0: f64, x1: f64, y: f64, state: &str) {
    if x1 <= x0 {
        return;
    }
    let _ = writeln!(
        svg,
        "<rect class=\"state\" data-state=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" \
         height=\"{:.1}\" fill=\"{}\"/>",
        escape(state),
        y + 2.0,
        x1 - x0,
        LANE - 4.0,
        state_fill(state)
    );
}

/// `text` safe inside an SVG text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at: u64, tried: &[&str], answered_by: Option<&str>) -> TimelineCall {
        TimelineCall {
            at: Duration::from_secs(at),
            tried: tried.iter().map(|s| s.to_string()).collect(),
            answered_by: answered_by.map(str::to_string),
        }
    }

    #[test]
    fn every_call_and_state_is_drawn_in_its_lane_as_well_formed_svg() {
        let t = Timeline {
            length: Duration::from_secs(20),
            phases: vec![
                (Duration::ZERO, "healthy".into()),
                (Duration::from_secs(10), "the primary <dies>".into()),
            ],
            destinations: vec!["primary".into(), "secondary".into()],
            calls: vec![
                call(1, &["primary"], Some("primary")),
                call(11, &["primary", "secondary"], Some("secondary")),
                call(12, &["primary", "secondary"], None),
            ],
            states: vec![
                StateChange {
                    at: Duration::ZERO,
                    destination: "primary".into(),
                    state: "up".into(),
                },
                StateChange {
                    at: Duration::from_secs(11),
                    destination: "primary".into(),
                    state: "down".into(),
                },
            ],
        };
        let svg = t.render();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let circles = |class: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name("circle") && n.attribute("class") == Some(class))
                .collect::<Vec<_>>()
        };
        assert_eq!(circles("answered").len(), 1);
        assert_eq!(circles("failed-over").len(), 1);
        assert_eq!(circles("failed").len(), 1);
        // The primary was tried and left by the two calls of the second phase.
        assert_eq!(circles("tried").len(), 3);
        let lane_y = |i: usize| format!("{:.1}", TOP + LANE * i as f64 + LANE / 2.0);
        assert_eq!(
            circles("answered")[0].attribute("cy"),
            Some(lane_y(0).as_str())
        );
        assert_eq!(
            circles("failed-over")[0].attribute("cy"),
            Some(lane_y(1).as_str())
        );
        assert_eq!(
            circles("failed")[0].attribute("cy"),
            Some(lane_y(2).as_str())
        );
        // The primary's lane: up, then down from 11 s; the secondary's never reported: probing.
        let states: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("state"))
            .filter_map(|n| n.attribute("data-state"))
            .collect();
        assert_eq!(states, ["up", "down", "probing"]);
        assert!(svg.contains("the primary &lt;dies&gt;"));
    }
}
