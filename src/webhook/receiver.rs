//! From a request's body to an answer: verify exactly as `webhook verify` does, then record
//! (issue 14, item 2).
//!
//! | what arrived                                             | answer | recorded          |
//! |----------------------------------------------------------|--------|-------------------|
//! | no signature header, a malformed one, or a wrong one      | 401    | nothing           |
//! | a stale or future `timestamp`, a body that is not a usable | 400    | nothing           |
//! | JSON object (no `timestamp`, no `delivery_id`)            |        |                   |
//! | a verified delivery, stored                               | 200    | delivery (and job)|
//! | the same delivery id again, or a job already queued, running or done | 200 | nothing new |
//! | a verified delivery that cannot be acted on (`delivery`)  | 200    | in `refused/`     |
//! | anything verified that could not be stored (disk full)    | 503    | nothing: the vendor retries |
//!
//! The answer never waits for a download: recording is a few small synced files.

use std::sync::Arc;

use crate::error::Error;
use crate::webhook::delivery::{self, Parsed};
use crate::webhook::log::{Event, Log};
use crate::webhook::queue::Queue;
use crate::webhook::server::Handler;
use crate::webhook::{verify, Secret, Signature, TimestampCheck};

/// How the request body is named in messages.
const INPUT: &str = "request body";

/// Checks deliveries and records them in the queue.
pub struct Receiver {
    /// The webhook secrets (any one may match).
    pub secrets: Vec<Secret>,
    /// Largest distance between a body's `timestamp` and now, in seconds.
    pub tolerance: u64,
    /// The customer ids jobs may be for.
    pub customers: Vec<String>,
    /// The queue.
    pub queue: Arc<Queue>,
    /// The log.
    pub log: Arc<dyn Log>,
}

impl Receiver {
    fn reject(&self, status: u16, why: String) -> u16 {
        self.log.log(Event::Rejected { status, why });
        status
    }
}

impl Handler for Receiver {
    fn delivery(&self, signature: Option<&str>, body: &[u8]) -> u16 {
        let Some(header) = signature else {
            return self.reject(401, "no X-CipherStream-Signature header".into());
        };
        let parsed = match Signature::parse(header) {
            Ok(parsed) => parsed,
            Err(Error::MalformedSignature(why)) => {
                return self.reject(
                    401,
                    format!("the X-CipherStream-Signature header is malformed: {why}"),
                )
            }
            Err(e) => return self.reject(401, e.to_string()),
        };
        let now = match crate::time::now() {
            Ok(now) => now,
            Err(e) => {
                self.log.log(Event::StoreFailed { why: e.to_string() });
                return 503;
            }
        };
        let check = TimestampCheck::Within {
            tolerance: self.tolerance,
            now,
        };
        let verified = match verify(INPUT, body, &parsed, &self.secrets, check) {
            Ok(v) => v,
            Err(e @ (Error::SignatureMismatch { .. } | Error::MalformedSignature(_))) => {
                return self.reject(401, e.to_string())
            }
            Err(e) => return self.reject(400, e.to_string()),
        };
        let delivery = match delivery::parse(&verified, body, header, &self.customers) {
            Ok(Parsed::Delivery(d)) => d,
            Ok(Parsed::Refused { delivery_id, why }) => {
                return match self
                    .queue
                    .refuse(delivery_id.as_deref(), &why, header, body, now)
                {
                    Ok(_) => {
                        self.log.log(Event::Refused { delivery_id, why });
                        200
                    }
                    Err(e) => {
                        self.log.log(Event::StoreFailed { why: e.to_string() });
                        503
                    }
                };
            }
            Err(e) => return self.reject(400, e.to_string()),
        };
        match self.queue.record(&delivery, false, now) {
            Ok(outcome) => {
                self.log.log(Event::Delivery {
                    delivery_id: delivery.delivery_id.clone(),
                    event: delivery.event.clone(),
                    job_id: delivery.job.as_ref().map(|j| j.job_id.clone()),
                    outcome,
                });
                200
            }
            Err(e) => {
                self.log.log(Event::StoreFailed { why: e.to_string() });
                503
            }
        }
    }
}
