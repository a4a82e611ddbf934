//! A small set of in-flight futures polled together (the client's pipelined requests), so the
//! client needs no task per request and no extra dependency.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Futures polled together; [`FutureSet::next`] yields outputs as they complete. Its size is
/// bounded by its owner (in-flight limits), not here.
pub(crate) struct FutureSet<T> {
    futures: Vec<BoxFuture<T>>,
}

impl<T> Default for FutureSet<T> {
    fn default() -> Self {
        FutureSet {
            futures: Vec::new(),
        }
    }
}

impl<T> FutureSet<T> {
    pub(crate) fn push(&mut self, future: impl Future<Output = T> + Send + 'static) {
        self.futures.push(Box::pin(future));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// Drop every future (their requests are abandoned; late responses are discarded).
    pub(crate) fn clear(&mut self) {
        self.futures.clear();
    }

    /// The output of the next future to complete. Pending forever while the set is empty:
    /// guard it with `is_empty` in a `select!`.
    pub(crate) async fn next(&mut self) -> T {
        std::future::poll_fn(|context| self.poll_next(context)).await
    }

    /// The output of a future that is already complete, without waiting.
    pub(crate) async fn next_ready(&mut self) -> Option<T> {
        std::future::poll_fn(|context| match self.poll_next(context) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    fn poll_next(&mut self, context: &mut Context<'_>) -> Poll<T> {
        // In insertion order, so that which output comes first is deterministic given the
        // order in which the futures became ready.
        for index in 0..self.futures.len() {
            if let Poll::Ready(output) = self.futures[index].as_mut().poll(context) {
                drop(self.futures.remove(index));
                return Poll::Ready(output);
            }
        }
        Poll::Pending
    }
}

/// Run futures concurrently and collect their outputs in input order.
pub(crate) async fn join_all<T: Send + 'static>(futures: Vec<BoxFuture<T>>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut futures: Vec<Option<BoxFuture<T>>> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (slot, future) in slots.iter_mut().zip(futures.iter_mut()) {
            if let Some(running) = future {
                match running.as_mut().poll(context) {
                    Poll::Ready(output) => {
                        *slot = Some(output);
                        *future = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().flatten().collect()
}
