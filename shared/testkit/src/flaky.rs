//! Random failures of a fake platform's sends, as a flaky platform gives them (chaos tests).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The most times in a row one message is failed. A sender retrying it (after 1, 2 and 5 s)
/// gets it through within seconds. Unbounded, at 20 % one message in about 3,000 failed six
/// times running, and its next retries (60 s, then 120 s) outlasted a chaos test's wait.
pub const MAX_IN_A_ROW: u32 = 3;

/// A share of sends failed at random, no message more than [`MAX_IN_A_ROW`] times in a row.
#[derive(Debug, Default)]
pub struct RandomFailures {
    per_mille: u32,
    /// Failures in a row, by message.
    streaks: HashMap<u64, u32>,
}

impl RandomFailures {
    /// Fails `per_mille` sends in a thousand from now on (0: none).
    pub fn set(&mut self, per_mille: u32) {
        self.per_mille = per_mille.min(1000);
        self.streaks.clear();
    }

    /// Whether this send of `message` (its request as sent: a retry sends the same) fails:
    /// the roll, below the share, that failed it.
    pub fn roll(&mut self, message: &[u8]) -> Option<u32> {
        if self.per_mille == 0 {
            return None;
        }
        let mut h = DefaultHasher::new();
        message.hash(&mut h);
        let key = h.finish();
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        let roll = u32::from(u16::from_le_bytes(b)) % 1000;
        let streak = self.streaks.entry(key).or_insert(0);
        if roll < self.per_mille && *streak < MAX_IN_A_ROW {
            *streak += 1;
            Some(roll)
        } else {
            self.streaks.remove(&key);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every send fails while the share is all of them, yet one message only so many times in
    /// a row; another message has its own streak.
    #[test]
    fn a_message_fails_at_most_a_few_times_in_a_row() {
        let mut f = RandomFailures::default();
        assert_eq!(f.roll(b"a"), None, "off by default");
        f.set(1000);
        for _ in 0..MAX_IN_A_ROW {
            assert!(f.roll(b"a").is_some());
        }
        assert_eq!(f.roll(b"a"), None, "the next try goes through");
        assert!(f.roll(b"b").is_some());
        assert!(f.roll(b"a").is_some(), "a new streak for a later send");
    }
}
