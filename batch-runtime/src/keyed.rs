//! [`Keyed`]: the results of a [`Batch::keyed`](crate::Batch::keyed)
//! batch, by key and in definition order.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Index;

/// Values by key, in definition order: what a
/// [`Batch::keyed`](crate::Batch::keyed) batch returns.
///
/// [`send`](crate::Batch::send) gives a `Keyed<K, Result<T, Error>>` (every
/// result), [`try_send`](crate::Batch::try_send) a `Keyed<K, T>` (every
/// success value). Look a value up by key with `results["eu"]` or
/// [`get`](Keyed::get), or iterate over `(key, value)` pairs in the order
/// the requests were given, whatever order they completed in.
///
/// Lookup compares keys one by one (a batch's keys are few, and keeping
/// them in a `Vec` keeps their order without asking them to be `Hash`);
/// to visit every result, iterate. If two requests share a key, lookup
/// finds the first; iteration sees both.
///
/// ```
/// use batch_runtime::fake::{Fake, Reply};
/// use batch_runtime::{Batch, Method, Request};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let fake = Fake::new();
/// fake.stub(Method::GET, "*/eu/*", Reply::json(120));
/// fake.stub(Method::GET, "*/us/*", Reply::status(503));
/// let client = fake.client();
///
/// let prices = Batch::keyed([
///     ("eu", Request::get("http://prices.test/eu/mug")),
///     ("us", Request::get("http://prices.test/us/mug")),
/// ])
/// .json::<u32>()
/// .send(&client)
/// .await;
///
/// assert_eq!(*prices["eu"].as_ref().unwrap(), 120);
/// assert!(prices.get("us").unwrap().is_err());
/// assert!(prices.get("jp").is_none());
/// let keys: Vec<&str> = prices.keys().copied().collect();
/// assert_eq!(keys, ["eu", "us"]);
/// # });
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Keyed<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Keyed<K, V> {
    /// Pairs, in definition order.
    pub(crate) fn from_pairs(entries: Vec<(K, V)>) -> Self {
        Keyed { entries }
    }

    /// The value of the first request with key `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The value of the first request with key `key`, mutably.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Takes the value of the first request with key `key` out (the others
    /// keep their order): to own a result without cloning it.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    /// Whether a request has key `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.position(key).is_some()
    }

    fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.entries.iter().position(|(k, _)| k.borrow() == key)
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(key, value)` pairs, in definition order.
    pub fn iter(&self) -> KeyedIter<'_, K, V> {
        KeyedIter(self.entries.iter())
    }

    /// The keys, in definition order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + DoubleEndedIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in definition order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + DoubleEndedIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values, owned, in definition order.
    pub fn into_values(self) -> impl ExactSizeIterator<Item = V> + DoubleEndedIterator {
        self.entries.into_iter().map(|(_, v)| v)
    }
}

/// `results["eu"]`: the value of the first request with that key.
///
/// # Panics
///
/// If no request has that key; use [`Keyed::get`] when it may be missing.
impl<K, V, Q> Index<&Q> for Keyed<K, V>
where
    K: Borrow<Q>,
    Q: PartialEq + fmt::Debug + ?Sized,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no request in this batch has the key {key:?}"),
        }
    }
}

/// An iterator over `(&key, &value)` pairs, in definition order.
#[derive(Debug, Clone)]
pub struct KeyedIter<'a, K, V>(std::slice::Iter<'a, (K, V)>);

impl<'a, K, V> Iterator for KeyedIter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for KeyedIter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k, v))
    }
}

impl<K, V> ExactSizeIterator for KeyedIter<'_, K, V> {}

impl<'a, K, V> IntoIterator for &'a Keyed<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = KeyedIter<'a, K, V>;

    fn into_iter(self) -> KeyedIter<'a, K, V> {
        self.iter()
    }
}

/// `(key, value)` pairs, owned, in definition order.
impl<K, V> IntoIterator for Keyed<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Pairs in the order given.
impl<K, V> FromIterator<(K, V)> for Keyed<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Keyed::from_pairs(pairs.into_iter().collect())
    }
}

/// As a map, `{key: value, ..}`, in definition order.
impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Keyed<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
