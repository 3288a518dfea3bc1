//! Several keys for one export, and which of them opens a row (issue 15).
//!
//! A customer may hold several keys: the current one and older ones for an archive of exports,
//! or both sides of a rotation that happened while a job ran, so that the rows of one export
//! switch key part-way. Every row names its key in `key_id`, but `key_id` is not authenticated (it
//! is outside the AAD): it only ever chooses which key is tried first, and the tag decides. A wrong
//! or altered key id can make a row fail; it can never open a row with a wrong key into a wrong
//! plaintext. A row opens if and only if one of the keys given authenticates it, whatever the
//! order the keys are tried in, so that order is about speed and about which key is reported,
//! never about what is released.
//!
//! For a row whose key id is K, keys are tried in this order, up to the first that authenticates:
//!
//! 1. the key that last opened a row whose key id was K (learned, shared by every worker);
//! 2. the key named K (a keyring's file of that name);
//! 3. every fixed key, in the order given (key files, the environment, a keyring's other files);
//! 4. each key command's key for K ([`Fetch`]), fetched when first needed and kept for the run.
//!
//! So with several keys and no keyring naming row 0's key id, each candidate is tried on the first
//! row of a key id only; every later row of that key id goes straight to the key that opened it.
//! A row that key does not open is tried with every other key before it is called a failure, so an
//! export whose rows switch key without changing `key_id` still opens.
//!
//! A key command is run only when no fixed key opens a row, and for at most
//! [`MAX_FETCHED_KEY_IDS`] new key ids per input: an altered export that named a new key id on
//! every row would otherwise run the command once per row. Which key id is the one too many
//! depends on the order the workers meet them in; a genuine export names one or two.
//!
//! Nothing here runs a command, reads a file or prints: the commands layer implements [`Fetch`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::{CommandFailure, CommandProblem};
use crate::format::aead::Cipher;
use crate::format::key::Key;

/// A key's place in its [`KeySet`]: stable for the life of the set.
pub type KeyIndex = usize;

/// Key commands are run for at most this many new key ids per input.
pub const MAX_FETCHED_KEY_IDS: usize = 16;

/// One key that may open rows, shared (not copied) by every worker that uses it: one key schedule
/// to wipe, wherever it is used.
pub struct SetKey {
    cipher: Cipher,
    /// Where it came from, for messages (`key file keys/k2024`); never the key.
    source: String,
    /// Its public fingerprint ([`Key::fingerprint`]), to recognise the same key given twice.
    fingerprint: Option<String>,
}

impl SetKey {
    /// The key's cipher.
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }

    /// Where the key came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Keys that exist only for a key id: what each key command prints when asked for one. Implemented
/// by the commands layer, which runs the commands.
pub trait Fetch: Send + Sync {
    /// How many key commands there are.
    fn count(&self) -> usize;

    /// Key command `i` as messages name it (`--key-cmd "pass"`).
    fn name(&self, i: usize) -> String;

    /// Run key command `i` for rows whose key id is `key_id`; the key and where it came from.
    /// Called at most once per command and key id in a [`KeySet`]'s life: its answer, a failure
    /// included, is kept.
    fn fetch(&self, i: usize, key_id: &str) -> Result<(Key, String), CommandFailure>;
}

/// One step of the order in which keys are tried for a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A key already in the set.
    Key(KeyIndex),
    /// Key command `i`'s key for the key id.
    Fetch(usize),
}

/// What a key command gave for a key id: the key's index, or why there is none.
type Fetched = Result<KeyIndex, CommandFailure>;

/// Every key given for a run, by index, with what it learned about key ids. Shared by the workers
/// of every input (`Arc`); see the module comment for the order keys are tried in.
pub struct KeySet {
    /// Every key, fixed ones first; fetched keys are appended as they arrive.
    keys: RwLock<Vec<Arc<SetKey>>>,
    /// Keys named by a key id (a keyring's file names).
    named: HashMap<String, KeyIndex>,
    /// Keys tried for any key id, in order.
    fixed: Vec<KeyIndex>,
    /// The key commands, if any.
    fetch: Option<Box<dyn Fetch>>,
    /// What each (key command, key id) gave. Locked while a command runs, so that workers asking
    /// for the same key at once run the command once.
    fetched: Mutex<HashMap<(usize, Box<str>), Fetched>>,
    /// The key that last opened a row of each key id.
    learned: RwLock<HashMap<Box<[u8]>, KeyIndex>>,
}

/// Builds a [`KeySet`].
#[derive(Default)]
pub struct KeySetBuilder {
    keys: Vec<Arc<SetKey>>,
    named: HashMap<String, KeyIndex>,
    fixed: Vec<KeyIndex>,
    fetch: Option<Box<dyn Fetch>>,
}

impl KeySetBuilder {
    /// Add a key, tried for every key id after the keys added before it; `name`, when given, is a
    /// key id it is tried first for (a keyring's file name). A key added twice (the same bytes) is
    /// kept once, under its first source.
    pub fn key(&mut self, key: &Key, source: impl Into<String>, name: Option<String>) {
        let fingerprint = key.fingerprint();
        let index = match self
            .keys
            .iter()
            .position(|k| k.fingerprint.as_deref() == Some(fingerprint.as_str()))
        {
            Some(index) => index,
            None => {
                self.keys.push(Arc::new(SetKey {
                    cipher: key.cipher(),
                    source: source.into(),
                    fingerprint: Some(fingerprint),
                }));
                self.fixed.push(self.keys.len() - 1);
                self.keys.len() - 1
            }
        };
        if let Some(name) = name {
            self.named.entry(name).or_insert(index);
        }
    }

    /// Key commands to run for keys the fixed ones lack.
    pub fn fetch(&mut self, fetch: Box<dyn Fetch>) {
        self.fetch = Some(fetch).filter(|f| f.count() > 0);
    }

    /// Whether no key and no key command was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.fetch.is_none()
    }

    /// The set.
    pub fn build(self) -> KeySet {
        KeySet {
            keys: RwLock::new(self.keys),
            named: self.named,
            fixed: self.fixed,
            fetch: self.fetch,
            fetched: Mutex::new(HashMap::new()),
            learned: RwLock::new(HashMap::new()),
        }
    }
}

impl KeySet {
    /// A set of keys, built one by one.
    pub fn builder() -> KeySetBuilder {
        KeySetBuilder::default()
    }

    /// A set of one key, for every key id.
    pub fn single(cipher: Cipher, source: impl Into<String>) -> KeySet {
        KeySet {
            keys: RwLock::new(vec![Arc::new(SetKey {
                cipher,
                source: source.into(),
                fingerprint: None,
            })]),
            named: HashMap::new(),
            fixed: vec![0],
            fetch: None,
            fetched: Mutex::new(HashMap::new()),
            learned: RwLock::new(HashMap::new()),
        }
    }

    /// Key `index`. Every index handed out is in the set for its life.
    pub fn get(&self, index: KeyIndex) -> Arc<SetKey> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)[index].clone()
    }

    /// The set's one key, when it holds one and no key command: every row is opened with it.
    pub fn sole(&self) -> Option<(KeyIndex, Arc<SetKey>)> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        (keys.len() == 1 && self.fetch.is_none()).then(|| (0, keys[0].clone()))
    }

    /// How many keys the set holds so far (fetched ones included).
    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the set holds no key yet (it may still fetch some).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The order in which keys are tried for rows whose key id is `key_id` (module comment).
    /// Fetch steps come last; a key may appear twice (learned and fixed), for the caller to skip.
    pub fn plan(&self, key_id: &[u8]) -> Vec<Step> {
        let learned = self
            .learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .copied();
        let named = std::str::from_utf8(key_id)
            .ok()
            .and_then(|id| self.named.get(id))
            .copied();
        let fetchers = self.fetch.as_ref().map_or(0, |f| f.count());
        learned
            .into_iter()
            .chain(named)
            .chain(self.fixed.iter().copied())
            .map(Step::Key)
            .chain((0..fetchers).map(Step::Fetch))
            .collect()
    }

    /// Remember that key `index` opened a row whose key id is `key_id`: it is tried first for
    /// that key id from now on.
    pub fn learn(&self, key_id: &[u8], index: KeyIndex) {
        let known = self
            .learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .copied();
        if known != Some(index) {
            self.learned
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key_id.into(), index);
        }
    }

    /// Key command `i`'s key for `key_id`, run now if it never was, within `input`'s allowance of
    /// new key ids.
    pub fn fetched(
        &self,
        i: usize,
        key_id: &str,
        input: &InputKeyIds,
    ) -> Result<KeyIndex, CommandFailure> {
        let Some(fetch) = &self.fetch else {
            return Err(CommandFailure {
                command: format!("key command {i}"),
                what: "key",
                key_id: Some(key_id.to_owned()),
                problem: CommandProblem::Start("there is no such key command".into()),
            });
        };
        let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = fetched.get(&(i, key_id.into())) {
            return known.clone();
        }
        if !input.admit(key_id) {
            // Not kept: another input may still ask for this key id within its allowance.
            return Err(CommandFailure {
                command: fetch.name(i),
                what: "key",
                key_id: Some(key_id.to_owned()),
                problem: CommandProblem::TooManyKeyIds {
                    limit: MAX_FETCHED_KEY_IDS,
                },
            });
        }
        let result = fetch
            .fetch(i, key_id)
            .map(|(key, source)| self.insert(&key, source));
        fetched.insert((i, key_id.into()), result.clone());
        result
    }

    /// Add a fetched key, or find the same key already in the set.
    fn insert(&self, key: &Key, source: String) -> KeyIndex {
        let fingerprint = key.fingerprint();
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = keys
            .iter()
            .position(|k| k.fingerprint.as_deref() == Some(fingerprint.as_str()))
        {
            return index;
        }
        keys.push(Arc::new(SetKey {
            cipher: key.cipher(),
            source,
            fingerprint: Some(fingerprint),
        }));
        keys.len() - 1
    }
}

/// The key ids one input asked key commands for (see [`MAX_FETCHED_KEY_IDS`]).
#[derive(Default)]
pub struct InputKeyIds {
    asked: Mutex<Vec<Box<str>>>,
}

impl InputKeyIds {
    /// Whether a key command may run for `key_id` in this input.
    fn admit(&self, key_id: &str) -> bool {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        if asked.iter().any(|k| &**k == key_id) {
            return true;
        }
        if asked.len() >= MAX_FETCHED_KEY_IDS {
            return false;
        }
        asked.push(key_id.into());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two key commands: command `i` gives key `[i + 1; 32]`, or fails for key ids starting with
    /// "fail"; runs are counted.
    struct Counting(Arc<AtomicUsize>);

    impl Fetch for Counting {
        fn count(&self) -> usize {
            2
        }
        fn name(&self, i: usize) -> String {
            format!("cmd{i}")
        }
        fn fetch(&self, i: usize, key_id: &str) -> Result<(Key, String), CommandFailure> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if key_id.starts_with("fail") {
                return Err(CommandFailure {
                    command: self.name(i),
                    what: "key",
                    key_id: Some(key_id.into()),
                    problem: CommandProblem::Status(1),
                });
            }
            Ok((
                Key::from_bytes([i as u8 + 1; 32]),
                format!("cmd{i} {key_id}"),
            ))
        }
    }

    fn counting() -> (Box<Counting>, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        (Box::new(Counting(runs.clone())), runs)
    }

    #[test]
    fn the_order_is_learned_named_fixed_then_fetched() {
        let mut b = KeySet::builder();
        b.key(&Key::from_bytes([7; 32]), "file a", None);
        b.key(&Key::from_bytes([8; 32]), "keyring k8", Some("k8".into()));
        b.fetch(counting().0);
        let set = b.build();
        assert_eq!(
            set.plan(b"k8"),
            [
                Step::Key(1),
                Step::Key(0),
                Step::Key(1),
                Step::Fetch(0),
                Step::Fetch(1)
            ]
        );
        assert_eq!(
            set.plan(b"other"),
            [Step::Key(0), Step::Key(1), Step::Fetch(0), Step::Fetch(1)]
        );
        set.learn(b"other", 1);
        assert_eq!(set.plan(b"other")[0], Step::Key(1));
    }

    #[test]
    fn the_same_key_twice_is_one_key_under_its_first_source() {
        let mut b = KeySet::builder();
        b.key(&Key::from_bytes([7; 32]), "file a", None);
        b.key(&Key::from_bytes([7; 32]), "keyring k7", Some("k7".into()));
        let set = b.build();
        assert_eq!(set.len(), 1);
        assert_eq!(set.get(0).source(), "file a");
        assert_eq!(set.plan(b"k7"), [Step::Key(0), Step::Key(0)]);
    }

    #[test]
    fn a_command_runs_once_per_key_id_and_its_failure_is_kept() {
        let mut b = KeySet::builder();
        b.key(&Key::from_bytes([2; 32]), "file", None);
        let (fetch, runs) = counting();
        b.fetch(fetch);
        let set = b.build();
        let input = InputKeyIds::default();
        // Command 1 gives [2; 32], the file's key: found, not added again.
        assert_eq!(set.fetched(1, "k", &input), Ok(0));
        assert_eq!(set.fetched(0, "k", &input), Ok(1));
        assert_eq!(set.get(1).source(), "cmd0 k");
        assert_eq!(set.fetched(0, "k", &input), Ok(1));
        let failed = set.fetched(0, "fail", &input).unwrap_err();
        assert_eq!(failed.problem, CommandProblem::Status(1));
        assert_eq!(set.fetched(0, "fail", &input), Err(failed));
        assert_eq!(runs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn commands_run_for_a_bounded_number_of_new_key_ids_per_input() {
        let mut b = KeySet::builder();
        b.fetch(counting().0);
        let set = b.build();
        let input = InputKeyIds::default();
        for n in 0..MAX_FETCHED_KEY_IDS {
            assert!(set.fetched(0, &format!("k{n}"), &input).is_ok());
        }
        let refused = set.fetched(0, "one-too-many", &input).unwrap_err();
        assert_eq!(
            refused.problem,
            CommandProblem::TooManyKeyIds {
                limit: MAX_FETCHED_KEY_IDS
            }
        );
        // Key ids already fetched for still answer; another input has its own allowance.
        assert!(set.fetched(1, "k3", &input).is_ok());
        assert!(set
            .fetched(0, "one-too-many", &InputKeyIds::default())
            .is_ok());
    }
}
