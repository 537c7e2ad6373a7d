//! The in-memory broker: the backplane of a single node without Redis.
//!
//! It keeps Redis's semantics (only subscribed channels are delivered, publishing to a channel
//! nobody hears succeeds) so that a node behaves the same with either broker, and it delivers
//! synchronously on the publisher's task, which is as fast as a broker can be.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::FutureExt;

use super::{Broker, BrokerFuture, Inbound};

pub struct MemoryBroker {
    inbound: Arc<dyn Inbound>,
    subscribed: Mutex<HashSet<String>>,
}

impl MemoryBroker {
    pub fn new(inbound: Arc<dyn Inbound>) -> Self {
        MemoryBroker {
            inbound,
            subscribed: Mutex::new(HashSet::new()),
        }
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set stays consistent even if a holder panicked: every update is one insert/remove.
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, channel: &str, payload: Bytes) -> BrokerFuture {
        if self.subscriptions().contains(channel) {
            self.inbound.deliver(channel.as_bytes(), Vec::from(payload));
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn subscribe(&self, channel: &str) -> BrokerFuture {
        self.subscriptions().insert(channel.to_owned());
        futures::future::ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, channel: &str) {
        self.subscriptions().remove(channel);
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

    impl Inbound for Recorder {
        fn deliver(&self, channel: &[u8], payload: Vec<u8>) {
            self.0.lock().unwrap().push((channel.to_vec(), payload));
        }
    }

    #[tokio::test]
    async fn delivers_only_subscribed_channels() {
        let recorder = Arc::new(Recorder::default());
        let broker = MemoryBroker::new(recorder.clone());
        broker.subscribe("a").await.unwrap();
        broker.publish("a", Bytes::from_static(b"1")).await.unwrap();
        broker.publish("b", Bytes::from_static(b"2")).await.unwrap();
        broker.unsubscribe("a");
        broker.publish("a", Bytes::from_static(b"3")).await.unwrap();
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec())]
        );
    }
}
