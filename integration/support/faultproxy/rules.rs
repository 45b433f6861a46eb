//! Which requests get which fault, and what the proxy has seen: the part a
//! test talks to while the proxy runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// What to do with a request. The proxy reads the request's body whole
/// before it acts, as a server would, so that a connection that gets an
/// answer stays usable for the next request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Forward it unchanged.
    Pass,
    /// Answer it with this status and an S3 XML error body with this code,
    /// without forwarding it; the connection stays open.
    Status { code: u16, s3_code: &'static str },
    /// Reset the client connection (SO_LINGER 0) without an answer.
    Reset,
    /// Never answer; the connection stays open until the client closes it
    /// or the proxy is dropped.
    Stall,
    /// Forward it, then send the response head and half of the body and
    /// close the connection; a response without a body is cut before its
    /// head.
    CutBody,
    /// Forward it, reading the request body and writing the response at
    /// this rate.
    Bandwidth { bytes_per_sec: u64 },
    /// Wait this long, then forward it.
    Latency(Duration),
    /// Forward it, send the response head at once, then the body at this
    /// rate (a body that trickles after prompt headers).
    TrickleBody { bytes_per_sec: u64 },
    /// Answer it without forwarding with a `200 OK` and a body of this many
    /// zero bytes, whatever the request asked for (a server that ignores
    /// `Range`); stops when the client hangs up. See `Counts::huge_sent`.
    HugeBody { bytes: u64 },
}

impl Fault {
    /// The name `Counts::by_fault` counts this fault under.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Status { .. } => "status",
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::CutBody => "cut_body",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Latency(_) => "latency",
            Fault::TrickleBody { .. } => "trickle_body",
            Fault::HugeBody { .. } => "huge_body",
        }
    }
}

/// Which requests get a fault. A request matches when its method equals
/// `method` (if set) and its target (path and query) contains
/// `path_contains` (if set). Of the matching requests, the 1st, then every
/// `every`-th after it (1 + every, 1 + 2 * every, ...) get the fault; the
/// others pass. `every` 0 is taken as 1.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    pub method: Option<&'static str>,
    pub path_contains: Option<String>,
    pub every: u32,
}

impl Rule {
    /// The fault for every request.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path_contains: None,
            every: 1,
        }
    }

    /// Only for requests with this method ("GET", "PUT", "HEAD", ...).
    pub fn method(self, method: &'static str) -> Rule {
        Rule {
            method: Some(method),
            ..self
        }
    }

    /// Only for requests whose path and query contain `s`.
    pub fn path(self, s: &str) -> Rule {
        Rule {
            path_contains: Some(s.to_string()),
            ..self
        }
    }

    /// Only for every `n`-th matching request (the first included).
    pub fn every(self, n: u32) -> Rule {
        Rule { every: n, ..self }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| target.contains(p))
    }
}

/// What the proxy has seen since it started (or `reset_counts`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests read (whole heads), faulted or not.
    pub requests: u64,
    /// Requests by method.
    pub by_method: BTreeMap<String, u64>,
    /// Requests that got a fault other than `Pass`.
    pub injected: u64,
    /// Those by `Fault::kind`.
    pub by_fault: BTreeMap<&'static str, u64>,
    /// Those by method.
    pub injected_by_method: BTreeMap<String, u64>,
    /// Body bytes `Fault::HugeBody` answers handed to their connections.
    pub huge_sent: u64,
    /// `Fault::HugeBody` answers that ended (sent whole, or the client hung
    /// up).
    pub huge_ended: u64,
}

impl Counts {
    pub fn method(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    pub fn fault(&self, kind: &str) -> u64 {
        self.by_fault.get(kind).copied().unwrap_or(0)
    }

    pub fn injected_for(&self, method: &str) -> u64 {
        self.injected_by_method.get(method).copied().unwrap_or(0)
    }
}

/// The rules in force and the counts, shared by the test's `FaultProxy`
/// and the proxy's connections, so that a test can change the rules and
/// read the counts while requests go through.
#[derive(Default)]
pub(super) struct Control {
    /// Each rule with how many requests have matched it, for `every`.
    rules: Mutex<Vec<(Rule, u64)>>,
    counts: Mutex<Counts>,
}

impl Control {
    pub(super) fn set(&self, rules: Vec<Rule>) {
        *self.rules.lock().unwrap() = rules.into_iter().map(|r| (r, 0)).collect();
    }

    pub(super) fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    pub(super) fn reset_counts(&self) {
        *self.counts.lock().unwrap() = Counts::default();
    }

    /// The fault for a request whose head has just arrived, counted. The
    /// first rule the request matches decides; no match means `Pass`.
    pub(super) fn decide(&self, method: &str, target: &str) -> Fault {
        let fault = {
            let mut rules = self.rules.lock().unwrap();
            match rules.iter_mut().find(|(r, _)| r.matches(method, target)) {
                None => Fault::Pass,
                Some((rule, matched)) => {
                    let nth = *matched;
                    *matched += 1;
                    if nth % u64::from(rule.every.max(1)) == 0 {
                        rule.fault.clone()
                    } else {
                        Fault::Pass
                    }
                }
            }
        };
        let mut c = self.counts.lock().unwrap();
        c.requests += 1;
        *c.by_method.entry(method.to_string()).or_default() += 1;
        if fault != Fault::Pass {
            c.injected += 1;
            *c.by_fault.entry(fault.kind()).or_default() += 1;
            *c.injected_by_method.entry(method.to_string()).or_default() += 1;
        }
        fault
    }

    pub(super) fn huge_sent(&self, bytes: u64) {
        self.counts.lock().unwrap().huge_sent += bytes;
    }

    pub(super) fn huge_ended(&self) {
        self.counts.lock().unwrap().huge_ended += 1;
    }
}
