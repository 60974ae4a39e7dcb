//! The wire sessions each user holds: `max_connections` bounds them all, and is taken before anyone has
//! authenticated, so without a bound per user one user could hold every place (PostgreSQL bounds a role with
//! `CONNECTION LIMIT`, pgbouncer with `max_user_connections`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

use lakegate_core::identity::Principal;

use crate::owner::Owner;

/// The sessions each user holds, up to `limit`.
#[derive(Debug)]
pub(crate) struct PerUser {
    limit: usize,
    held: Mutex<HashMap<Owner, usize>>,
}

/// One user's place, given back when dropped (at the end of the connection).
#[derive(Debug)]
pub(crate) struct Place {
    per_user: Arc<PerUser>,
    user: Owner,
}

impl PerUser {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, held: Mutex::default() })
    }

    /// A place for `principal`'s user; `None` when the user already holds `limit`.
    pub(crate) fn take(self: &Arc<Self>, principal: &Principal) -> Option<Place> {
        let user = Owner::of(principal);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(user.clone()).or_default();
        if *count >= self.limit {
            if *count == 0 {
                held.remove(&user);
            }
            return None;
        }
        *count += 1;
        Some(Place { per_user: self.clone(), user })
    }

    /// How many users hold a place; the map holds no one else.
    #[cfg(test)]
    fn users(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.per_user.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut count) = held.entry(std::mem::take(&mut self.user)) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::tests::principal;

    #[test]
    fn a_user_holds_at_most_the_limit_and_a_place_given_back_is_taken_again() {
        let per_user = PerUser::new(2);
        let alice = principal("https://idp", "alice");
        let (first, second) = (per_user.take(&alice), per_user.take(&alice));
        assert!(first.is_some() && second.is_some());
        assert!(per_user.take(&alice).is_none(), "a third place");
        // Others are not counted with alice, nor an alice of another issuer.
        assert!(per_user.take(&principal("https://idp", "bob")).is_some());
        let other_alice = per_user.take(&principal("https://other", "alice"));
        assert!(other_alice.is_some());
        drop(first);
        assert!(per_user.take(&alice).is_some());
    }

    #[test]
    fn users_who_hold_nothing_are_not_kept() {
        let per_user = PerUser::new(1);
        let places: Vec<_> = (0..100).map(|i| per_user.take(&principal("https://idp", &format!("u{i}")))).collect();
        assert_eq!(per_user.users(), 100);
        drop(places);
        assert_eq!(per_user.users(), 0);
        // Nor is a user refused for holding the limit.
        let none = PerUser::new(0);
        assert!(none.take(&principal("https://idp", "alice")).is_none());
        assert_eq!(none.users(), 0);
    }
}
