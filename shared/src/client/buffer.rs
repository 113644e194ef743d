//! The producer's buffer (`ProducerConfig::buffer_bytes`): space taken by records until their batch is answered.
//!
//! A `Held` is some of that space, held by one record, one `send_batch` group or one batch, and given back
//! when it is dropped, however that happens (answered, failed, the producer dropped). Moving space from one
//! hold to another is arithmetic on the two counts: a record joining its batch costs no atomic operation
//! (a tokio `OwnedSemaphorePermit` per record cost two, on a reference count the sender's thread also
//! touches, which showed in the producer's profile).

use std::sync::Arc;

use tokio::sync::{AcquireError, Semaphore};

/// Space in the producer's buffer, given back when dropped.
pub struct Held {
    buffer: Arc<Semaphore>,
    bytes: usize,
}

impl Held {
    /// `bytes` of the buffer now, if they are free.
    pub fn try_take(buffer: &Arc<Semaphore>, bytes: u32) -> Option<Held> {
        buffer.try_acquire_many(bytes).ok()?.forget();
        Some(Held { buffer: buffer.clone(), bytes: bytes as usize })
    }

    /// `bytes` of the buffer, once they are free (an error once the buffer is closed).
    pub async fn take(buffer: &Arc<Semaphore>, bytes: u32) -> Result<Held, AcquireError> {
        buffer.acquire_many(bytes).await?.forget();
        Ok(Held { buffer: buffer.clone(), bytes: bytes as usize })
    }

    /// Nothing yet, of the same buffer as `self` (a new batch's hold).
    pub fn empty_like(&self) -> Held {
        Held { buffer: self.buffer.clone(), bytes: 0 }
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves `bytes` of this hold to `into`, a hold of the same buffer.
    pub fn move_to(&mut self, into: &mut Held, bytes: usize) {
        assert!(bytes <= self.bytes, "moving {bytes} bytes of a hold of {}", self.bytes);
        debug_assert!(Arc::ptr_eq(&self.buffer, &into.buffer), "holds of two buffers");
        self.bytes -= bytes;
        into.bytes += bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.buffer.add_permits(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_moves_between_holds_and_comes_back_once_when_they_are_dropped() {
        let buffer = Arc::new(Semaphore::new(1000));
        let mut group = Held::try_take(&buffer, 600).expect("free");
        assert_eq!(buffer.available_permits(), 400);
        assert!(Held::try_take(&buffer, 401).is_none(), "only 400 are free");
        let mut batch = group.empty_like();
        group.move_to(&mut batch, 250);
        group.move_to(&mut batch, 100);
        assert_eq!((group.bytes(), batch.bytes()), (250, 350));
        assert_eq!(buffer.available_permits(), 400, "moving gives nothing back");
        drop(batch);
        assert_eq!(buffer.available_permits(), 750);
        drop(group);
        assert_eq!(buffer.available_permits(), 1000);
        let mut emptied = Held::try_take(&buffer, 10).expect("free");
        let mut other = emptied.empty_like();
        emptied.move_to(&mut other, 10);
        drop(emptied);
        assert_eq!(buffer.available_permits(), 990, "an emptied hold gives back nothing");
        drop(other);
        assert_eq!(buffer.available_permits(), 1000);
    }

    #[test]
    #[should_panic(expected = "moving 11 bytes of a hold of 10")]
    fn a_hold_cannot_give_more_than_it_has() {
        let buffer = Arc::new(Semaphore::new(100));
        let mut small = Held::try_take(&buffer, 10).expect("free");
        let mut other = small.empty_like();
        small.move_to(&mut other, 11);
    }

    #[tokio::test]
    async fn a_waiting_take_gets_the_space_a_dropped_hold_gives_back() {
        let buffer = Arc::new(Semaphore::new(100));
        let first = Held::try_take(&buffer, 80).expect("free");
        let waiting = tokio::spawn({
            let buffer = buffer.clone();
            async move { Held::take(&buffer, 50).await.map(|held| held.bytes()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.expect("task").expect("open"), 50);
        assert_eq!(buffer.available_permits(), 100);
    }
}
