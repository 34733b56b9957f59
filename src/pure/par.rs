//! Work spread over the cores for long lists: contiguous shares, one thread per core
//! (at most 8), results in order; short lists stay on the caller's thread, where
//! starting threads would cost more than it saves.

/// `f` of every item, in order.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    serial_below: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads == 1 || items.len() < serial_below {
        return items.iter().map(f).collect();
    }
    let share = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_order_on_one_thread_or_many() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = super::map(&items, 64, |i| i * 2);
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let short = super::map(&items[..10], 64, |i| i + 1);
        assert_eq!(short, (1..11).collect::<Vec<_>>());
        let threads: std::collections::HashSet<_> =
            super::map(&items, 64, |_| std::thread::current().id())
                .into_iter()
                .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads.len(), cores.min(8));
    }
}
