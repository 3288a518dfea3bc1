//! Throughput of the plaintext check: `json::validate` (UTF-8 and JSON in one pass) against what it
//! replaced, `std::str::from_utf8` then `serde_json::from_slice::<IgnoredAny>`, and against its own
//! portable fallback (`json::internals::portable_fast_scan`: string bodies 8 bytes at a time in a
//! `u64`, what `validate` does on architectures without SSE2), on realistic rows, one call per
//! row as in `decrypt`.
//!
//! ```text
//! cargo bench --locked --bench json_check [-- ROWS.ndjson]
//! ```
//!
//! Without an argument it generates 100,000 rows in memory, deterministically, shaped like
//! `bench/make_export.py`'s `record()` (appointments, patients, payments and treatments of a fake
//! dental practice; about 400 bytes each, compact, non-ASCII names unescaped; keys in sorted order,
//! since they are serialised through serde_json's `Value`). With a file, each non-blank line of it
//! is a row. Both checks must accept every row. Then it runs several rounds; each goes through the
//! rows 1,000 at a time (about 420 KB), brings them into cache untimed (`decrypt` checks each
//! plaintext right after decrypting it, so it is in cache), and times serde_json, then `validate`,
//! then the portable fallback, on them. Each round prints MB/s (10^6 bytes of row per second) for
//! each and the ratios serde_json / `validate` and portable / `validate`; the medians come last.
//! The rows `decrypt` really sees are the bench exports' plaintext, e.g.
//! `cipherstream decrypt bench/work/rows_100000/export.ndjson ... -o rows.ndjson`.

use std::hint::black_box;
use std::time::Instant;

use serde::de::IgnoredAny;
use serde_json::{json, Value};

const ROWS: usize = 100_000;
const ROUNDS: usize = 7;
/// Rows timed together, after being brought into cache (about 420 KB of them).
const GROUP: usize = 1000;

fn main() {
    // `cargo bench` appends `--bench`; a harness-less bench must ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (rows, source) = match args.as_slice() {
        [] => (generate(ROWS), format!("{ROWS} generated rows")),
        [path] => {
            let text = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let rows: Vec<Vec<u8>> = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            let n = rows.len();
            (rows, format!("{n} rows of {path}"))
        }
        _ => {
            eprintln!("usage: json_check [ROWS.ndjson]");
            std::process::exit(2);
        }
    };
    let bytes: usize = rows.iter().map(Vec::len).sum();
    println!(
        "{source}: {bytes} bytes, {:.0} bytes per row",
        bytes as f64 / rows.len() as f64
    );
    for row in &rows {
        assert!(serde_json::from_slice::<IgnoredAny>(row).is_ok());
        assert!(cipherstream::format::json::validate(row).is_ok());
        assert!(portable(row).is_some());
    }

    // Rows one after another in memory, timed a cache-sized group at a time: in `decrypt` each
    // plaintext is checked right after it is decrypted, so it is in cache.
    let mut all = Vec::with_capacity(bytes);
    let mut ends = Vec::with_capacity(rows.len());
    for row in &rows {
        all.extend_from_slice(row);
        ends.push(all.len());
    }
    let groups: Vec<Vec<&[u8]>> = ends
        .chunks(GROUP)
        .enumerate()
        .map(|(g, chunk)| {
            let mut start = if g == 0 { 0 } else { ends[g * GROUP - 1] };
            chunk
                .iter()
                .map(|&end| {
                    let row = &all[start..end];
                    start = end;
                    row
                })
                .collect()
        })
        .collect();

    let (mut ratios, mut portable_ratios) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (mut serde, mut ours, mut fallback) = (0.0, 0.0, 0.0);
        for group in &groups {
            // Bring the group into cache, untimed.
            let touched: usize = group
                .iter()
                .map(|r| r.iter().map(|&b| usize::from(b)).sum::<usize>())
                .sum();
            black_box(touched);
            let start = Instant::now();
            let mut ok = 0usize;
            for row in group {
                let row = black_box(row);
                ok += usize::from(
                    std::str::from_utf8(row).is_ok()
                        && serde_json::from_slice::<IgnoredAny>(row).is_ok(),
                );
            }
            serde += start.elapsed().as_secs_f64();
            assert_eq!(black_box(ok), group.len());

            let start = Instant::now();
            let mut ok = 0usize;
            for row in group {
                ok += usize::from(cipherstream::format::json::validate(black_box(row)).is_ok());
            }
            ours += start.elapsed().as_secs_f64();
            assert_eq!(black_box(ok), group.len());

            let start = Instant::now();
            let mut ok = 0usize;
            for row in group {
                ok += usize::from(portable(black_box(row)).is_some());
            }
            fallback += start.elapsed().as_secs_f64();
            assert_eq!(black_box(ok), group.len());
        }
        let mbps = |secs: f64| bytes as f64 / secs / 1e6;
        ratios.push(serde / ours);
        portable_ratios.push(fallback / ours);
        println!(
            "round {round}: from_utf8 + serde_json IgnoredAny {:5.0} MB/s   json::validate {:5.0} MB/s   \
             portable fallback {:5.0} MB/s   serde/validate {:.2}x   portable/validate {:.2}x",
            mbps(serde),
            mbps(ours),
            mbps(fallback),
            serde / ours,
            fallback / ours
        );
    }
    for (what, ratios) in [
        ("serde_json / validate", &mut ratios),
        ("portable fallback / validate", &mut portable_ratios),
    ] {
        ratios.sort_by(f64::total_cmp);
        println!(
            "median time ratio {what}: {:.2}x (min {:.2}x, max {:.2}x) over {ROUNDS} rounds",
            ratios[ROUNDS / 2],
            ratios[0],
            ratios[ROUNDS - 1]
        );
    }
}

/// The check as `validate` makes it on an architecture without SSE2.
fn portable(row: &[u8]) -> Option<bool> {
    cipherstream::format::json::internals::portable_fast_scan(row)
}

/// SplitMix64: small, deterministic, good enough to pick fake records.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [lo, hi], like Python's `randint`.
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn choice<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// `k` distinct items, like Python's `random.sample`.
    fn sample<'a, T>(&mut self, items: &'a [T], k: usize) -> Vec<&'a T> {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..k {
            let j = i + self.below((items.len() - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx[..k].iter().map(|&i| &items[i]).collect()
    }
}

const GIVEN: &[&str] = &[
    "Zoë",
    "Mateo",
    "Aiko",
    "Oluwaseun",
    "Siobhán",
    "Lukas",
    "Priya",
    "Émile",
    "Noah",
    "Olivia",
    "Liam",
    "Amelia",
    "Jack",
    "Isla",
    "Oliver",
    "Ava",
    "Hamish",
    "Mia",
    "Freya",
    "Sebastián",
    "Chloé",
    "Ingrid",
    "Tomasz",
    "Fatima",
    "Mohammed",
    "Grace",
    "Chen",
    "Yuki",
    "Ana",
    "Kwame",
];
const FAMILY: &[&str] = &[
    "Ólafsdóttir",
    "García",
    "Tanaka",
    "Adeyemi",
    "Ní Bhriain",
    "Nowak",
    "Raghunathan",
    "Fournier",
    "Smith",
    "Jones",
    "Williams",
    "Brown",
    "Taylor",
    "Müller",
    "O'Connor",
    "Rossi",
    "Kowalski",
    "Nguyen",
    "Haddad",
    "Papadopoulos",
    "Johansson",
    "Silva",
    "Murphy",
    "Kelly",
    "Walsh",
    "Byrne",
    "Dubois",
    "Schmidt",
    "Andersen",
    "Okafor",
];
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("prov_017", "Dr. Amélie Dubois", "dentist"),
    ("prov_022", "Dr. Siobhán Ní Bhriain", "hygienist"),
    ("prov_031", "Dr. Mateo Ruiz", "orthodontist"),
    ("prov_044", "Dr. Hannah Weiß", "dentist"),
    ("prov_052", "Dr. Kofi Mensah", "oral_surgeon"),
    ("prov_060", "Dr. Emma Clarke", "dentist"),
];
const PROCEDURES: &[(&str, &str, f64)] = &[
    ("D0120", "Periodic oral evaluation", 55.00),
    ("D0150", "Comprehensive oral evaluation", 95.00),
    ("D0220", "Periapical radiograph", 28.00),
    ("D0274", "Bitewings – four films", 68.00),
    ("D1110", "Prophylaxis – adult", 120.50),
    ("D1120", "Prophylaxis – child", 80.00),
    ("D1206", "Fluoride varnish", 42.00),
    ("D2140", "Amalgam – one surface", 110.00),
    ("D2392", "Resin composite, two surfaces", 185.00),
    ("D2740", "Crown – porcelain/ceramic", 980.00),
    ("D3330", "Endodontic therapy, molar", 1150.00),
    ("D7140", "Extraction, erupted tooth", 210.00),
    ("D8660", "Pre-orthodontic visit", 150.00),
    ("D9110", "Palliative treatment", 95.00),
];
const STATUSES: &[&str] = &[
    "completed",
    "completed",
    "completed",
    "confirmed",
    "confirmed",
    "cancelled",
    "no_show",
    "rescheduled",
];
const NOTES: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("Sensitive upper left quadrant."),
    Some("Prefers morning slots (before 10:00)."),
    Some("Left voicemail; rebook requested."),
    Some("Anxious patient – allow extra time."),
    Some("Guardian present."),
    Some("50% deposit; balance due at fit."),
    Some("Bleeding on probing, lower anterior."),
    Some("Reminder sent by SMS."),
];
const CLINICS: &[&str] = &["clinic_dub_01", "clinic_cork_02", "clinic_lon_03"];
const INSURERS: &[Option<&str>] = &[
    Some("Laya Healthcare"),
    Some("Irish Life Health"),
    Some("VHI Dental"),
    Some("Delta Dental"),
    Some("Bupa Dental"),
    None,
    None,
];
const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "GBP"];
const METHODS: &[&str] = &["card", "card", "card", "cash", "insurance", "bank_transfer"];
const BRANDS: &[&str] = &["visa", "mastercard", "amex"];

fn stamp(r: &mut Rng) -> String {
    format!(
        "2025-{:02}-{:02}T{:02}:{}:00+01:00",
        r.int(1, 9),
        r.int(1, 28),
        r.int(8, 17),
        r.choice(&["00", "15", "30", "45"])
    )
}

fn money(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn record(r: &mut Rng, i: u64) -> Value {
    let kind = r.random();
    let pid = format!("pat_{:06x}", r.below(16u64.pow(6)));
    if kind < 0.40 {
        let prov = *r.choice(PROVIDERS);
        let k = *r.choice(&[0, 1, 1, 2, 2, 3]);
        let procs: Vec<Value> = r
            .sample(PROCEDURES, k)
            .into_iter()
            .map(|&(code, description, fee)| {
                let tooth = if r.below(2) == 0 {
                    Value::Null
                } else {
                    json!(r.int(11, 48))
                };
                json!({"code": code, "description": description, "fee": fee, "tooth": tooth})
            })
            .collect();
        return json!({
            "record_type": "appointment", "appointment_id": format!("apt_{i:09}"),
            "clinic_id": r.choice(CLINICS),
            "patient": {"id": pid, "name": format!("{} {}", r.choice(GIVEN), r.choice(FAMILY))},
            "provider": {"id": prov.0, "name": prov.1, "role": prov.2}, "room": r.int(1, 6),
            "start": stamp(r), "duration_minutes": r.choice(&[15, 20, 30, 45, 60, 90]),
            "status": r.choice(STATUSES), "procedures": procs, "notes": r.choice(NOTES),
        });
    }
    if kind < 0.65 {
        let (g, f) = (*r.choice(GIVEN), *r.choice(FAMILY));
        let insurance = match *r.choice(INSURERS) {
            None => Value::Null,
            Some(ins) => {
                json!({"provider": ins, "member_no": format!("M-{:09}", r.below(1_000_000_000))})
            }
        };
        return json!({
            "record_type": "patient", "patient_id": pid, "name": {"given": g, "family": f},
            "date_of_birth": format!("{}-{:02}-{:02}", r.int(1935, 2020), r.int(1, 12), r.int(1, 28)),
            "email": format!("{}.{}{}@example.com", g.to_lowercase(), f.to_lowercase().replace(' ', ""), r.int(1, 999)),
            "phone": format!("+353 8{} {} {}", r.int(3, 9), r.int(100, 999), r.int(1000, 9999)),
            "address": {"line1": format!("{} {} Street", r.int(1, 250), r.choice(FAMILY)),
                        "city": r.choice(&["Dublin", "Cork", "Galway", "London"]),
                        "postcode": format!("D{:02} X{}", r.int(1, 24), r.int(100, 999))},
            "insurance": insurance,
            "recall_due": format!("2026-{:02}-{:02}", r.int(1, 12), r.int(1, 28)),
            "created_at": stamp(r),
        });
    }
    if kind < 0.90 {
        let amount = money(20.0 + r.random() * 1180.0);
        let method = *r.choice(METHODS);
        let card = if method == "card" {
            json!({"brand": r.choice(BRANDS), "last4": format!("{:04}", r.below(10_000)),
                   "exp": format!("{:02}/{}", r.int(1, 12), r.int(26, 31))})
        } else {
            Value::Null
        };
        return json!({
            "record_type": "payment", "payment_id": format!("pay_{:x}", r.below(36u64.pow(9))),
            "appointment_id": format!("apt_{:09}", r.below(i + 1)), "patient_id": pid,
            "amount": amount, "currency": r.choice(CURRENCIES), "method": method, "card": card,
            "allocations": [{"invoice_id": format!("inv_{:07}", r.below(10_000_000)), "amount": amount}],
            "paid_at": stamp(r), "refunded": r.random() < 0.03,
            "receipt_url": format!("https://billing.example.com/r/{:010x}", r.below(16u64.pow(10))),
        });
    }
    let prov = *r.choice(PROVIDERS);
    let k = *r.choice(&[1, 2, 3]);
    let items: Vec<(u64, &str, &str, f64, &str)> = r
        .sample(PROCEDURES, k)
        .into_iter()
        .map(|&(code, description, fee)| {
            let tooth = r.int(11, 48);
            let status = *r.choice(&["proposed", "accepted", "done"]);
            (tooth, code, description, fee, status)
        })
        .collect();
    let total = money(items.iter().map(|it| it.3).sum());
    let items: Vec<Value> = items
        .into_iter()
        .map(|(tooth, code, description, fee, status)| {
            json!({"tooth": tooth, "code": code, "description": description, "fee": fee, "status": status})
        })
        .collect();
    json!({
        "record_type": "treatment", "treatment_id": format!("trt_{i:09}"), "patient_id": pid,
        "provider": {"id": prov.0, "name": prov.1}, "items": items, "total": total,
        "created_at": stamp(r),
    })
}

fn generate(n: usize) -> Vec<Vec<u8>> {
    let mut r = Rng(0x6369_7068_6572_7374); // "cipherst"
    (0..n as u64)
        .map(|i| serde_json::to_vec(&record(&mut r, i)).expect("serialisable"))
        .collect()
}
