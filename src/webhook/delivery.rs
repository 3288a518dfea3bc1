//! What a verified delivery asks of the receiver: a job to run, an event to record, or nothing it
//! may act on (issue 14, items 1 and 3).
//!
//! The body is read only after [`crate::webhook::verify`] accepted its signature and timestamp.
//! Even then its ids are untrusted text: a delivery id or job id becomes a file name only if it
//! passes [`safe_id`]; anything else makes the delivery [`Parsed::Refused`], recorded for the
//! operator and never acted on. So is a `job.completed` for a customer id the receiver was not
//! configured for, or one without a usable URL or row count.
//!
//! Refused deliveries are answered 200, not 400: they are genuine (the signature verified) and
//! recorded, and no retry by the vendor can change them; a 4xx would only bring three more
//! copies. After a configuration change (a customer id added) the operator replays the saved
//! body with `webhook replay`.

use crate::error::{Error, Result};
use crate::net::url::DownloadUrl;
use crate::time::parse_rfc3339;
use crate::webhook::queue::{safe_id, Delivery, JobOrder, SecretUrl};
use crate::webhook::Verified;

/// The only event that is acted on.
pub const JOB_COMPLETED: &str = "job.completed";

/// What a verified body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A delivery to record (and, for a `job.completed`, a job to run).
    Delivery(Delivery),
    /// A delivery that will not be acted on.
    Refused {
        /// Its delivery id as sent, when it is a string.
        delivery_id: Option<String>,
        /// Why, in the receiver's words.
        why: String,
    },
}

/// Read what a verified body asks for. `signature` is the header it came with (kept so the
/// delivery can be verified again when replayed); `customers` the customer ids the receiver was
/// configured for.
///
/// Errors: a body without a usable `delivery_id` is not a delivery at all (answered 400).
pub fn parse(
    verified: &Verified,
    body: &[u8],
    signature: &str,
    customers: &[String],
) -> Result<Parsed> {
    let delivery_id = verified.delivery_id()?.to_owned();
    let refuse = |why: String| {
        Ok(Parsed::Refused {
            delivery_id: Some(delivery_id.clone()),
            why,
        })
    };
    if !safe_id(&delivery_id) {
        return refuse(
            "its delivery_id is not 1 to 128 letters, digits, '.', '_' or '-' starting with a \
             letter or digit"
                .into(),
        );
    }
    let json = verified.json();
    let event = match json.get("event") {
        Some(serde_json::Value::String(event)) => event.clone(),
        Some(_) => return refuse("its event is not a string".into()),
        None => "?".to_owned(),
    };
    let body = String::from_utf8(body.to_vec()).map_err(|_| {
        // serde_json accepted it, so it is UTF-8; this cannot happen.
        Error::Usage("a verified body is not UTF-8".into())
    })?;
    let job = if event == JOB_COMPLETED {
        match job_order(json, customers) {
            Ok(order) => Some(order),
            Err(why) => return refuse(why),
        }
    } else {
        None
    };
    Ok(Parsed::Delivery(Delivery {
        delivery_id,
        event,
        signature: signature.to_owned(),
        body,
        job,
    }))
}

/// The job a `job.completed` asks for, or why it cannot be run.
fn job_order(
    json: &serde_json::Value,
    customers: &[String],
) -> std::result::Result<JobOrder, String> {
    let data = json
        .get("data")
        .filter(|d| d.is_object())
        .ok_or("its data is missing or not an object")?;
    let text = |field: &str| data.get(field).and_then(serde_json::Value::as_str);
    let job_id = text("job_id").ok_or("its data.job_id is missing or not a string")?;
    if !safe_id(job_id) {
        return Err(
            "its data.job_id is not 1 to 128 letters, digits, '.', '_' or '-' starting with a \
             letter or digit"
                .into(),
        );
    }
    let customer_id =
        text("customer_id").ok_or("its data.customer_id is missing or not a string")?;
    if !customers.iter().any(|c| c == customer_id) {
        return Err(format!(
            "its data.customer_id {} is not one this receiver was given (--customer-id)",
            crate::text::shorten(customer_id)
        ));
    }
    let rows_processed = data
        .get("rows_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or("its data.rows_processed is missing or not a whole number")?;
    let file_size_bytes = match data.get("file_size_bytes") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("its data.file_size_bytes is not a whole number")?,
        ),
    };
    let s3_url = text("s3_url").ok_or("its data.s3_url is missing or not a string")?;
    let url = DownloadUrl::parse(s3_url)
        .map_err(|problem| format!("its data.s3_url cannot be used: {problem}"))?;
    let stated = match text("expires_at") {
        None => None,
        Some(at) => Some(
            parse_rfc3339(at)
                .map_err(|why| format!("its data.expires_at is not an RFC 3339 time: {why}"))?,
        ),
    };
    // The earlier of the two: the URL dies at its own expiry whatever the body says.
    let expires_at = match (stated, url.expires_at()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(JobOrder {
        job_id: job_id.to_owned(),
        customer_id: customer_id.to_owned(),
        rows_processed,
        file_size_bytes,
        s3_url: SecretUrl(s3_url.to_owned()),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{verify, Secret, Signature, TimestampCheck};

    fn parsed(body: &str) -> Result<Parsed> {
        let secret = Secret::from_text(b"k", "test").unwrap();
        let header = secret.signature_header(body.as_bytes());
        let sig = Signature::parse(&header).unwrap();
        let v = verify("b", body.as_bytes(), &sig, &[secret], TimestampCheck::Skip).unwrap();
        parse(&v, body.as_bytes(), &header, &["cust-42".to_owned()])
    }

    fn completed(data: &str) -> String {
        format!(r#"{{"event":"job.completed","delivery_id":"d1","data":{data}}}"#)
    }

    #[test]
    fn a_completed_job_becomes_an_order() {
        let body = completed(
            r#"{"job_id":"j1","customer_id":"cust-42","rows_processed":3,"file_size_bytes":9,
            "s3_url":"https://h/k?X-Amz-Date=20240926T100215Z&X-Amz-Expires=60","expires_at":"2024-09-26T22:02:15Z"}"#,
        );
        let Parsed::Delivery(d) = parsed(&body).unwrap() else {
            panic!("refused")
        };
        let job = d.job.unwrap();
        assert_eq!(job.job_id, "j1");
        assert_eq!(job.rows_processed, 3);
        assert_eq!(job.file_size_bytes, Some(9));
        // The URL's own expiry (10:03:15) comes before the body's (22:02:15).
        assert_eq!(job.expires_at, Some(1_727_344_935 + 60));
        assert_eq!(d.body, body);
    }

    #[test]
    fn unusable_ids_and_unknown_customers_are_refused() {
        let refused = |body: &str| match parsed(body).unwrap() {
            Parsed::Refused { why, .. } => why,
            other => panic!("{other:?}"),
        };
        let data = |job: &str, customer: &str| {
            completed(&format!(
                r#"{{"job_id":"{job}","customer_id":"{customer}","rows_processed":1,"s3_url":"https://h/k"}}"#
            ))
        };
        assert!(refused(&data("../x", "cust-42")).contains("data.job_id"));
        assert!(refused(&data("j", "other")).contains("\"other\" is not one"));
        assert!(refused(&completed(r#"{"job_id":"j","customer_id":"cust-42","rows_processed":1,"s3_url":"http://example.com/k"}"#)).contains("s3_url cannot be used"));
        assert!(refused(r#"{"delivery_id":"a/b"}"#).contains("delivery_id"));
        // Other events are recorded, whatever their data.
        let Parsed::Delivery(d) = parsed(r#"{"delivery_id":"d","event":"job.failed"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((d.event.as_str(), d.job), ("job.failed", None));
        // No delivery id: not a delivery.
        assert!(parsed(r#"{"event":"job.failed"}"#).is_err());
    }
}
