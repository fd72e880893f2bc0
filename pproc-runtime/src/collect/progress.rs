//! An optional progress bar for exchanges, maps and queues: calls ended out
//! of calls given. Without the `progress` feature it is nothing at all.

/// The progress of an exchange, if it shows one.
#[derive(Debug, Default)]
pub(crate) struct Bar {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
    /// Whether the total is known up front (a map over an input of known
    /// length), rather than counted as calls are given.
    #[cfg(feature = "progress")]
    fixed: bool,
}

#[cfg(feature = "progress")]
impl Bar {
    /// Shows a bar (on standard error, where it is a terminal), or hides
    /// it.
    pub(crate) fn show(&mut self, on: bool) {
        if !on {
            self.finish();
            return;
        }
        if self.bar.is_none() {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} calls, {per_sec}, eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        }
    }

    /// Shows `bar`, as its owner styled it (or added it to a
    /// `MultiProgress`): its length and position are set from here on.
    pub(crate) fn show_bar(&mut self, bar: indicatif::ProgressBar) {
        self.finish();
        bar.set_position(0);
        bar.set_length(0);
        self.fixed = false;
        self.bar = Some(bar);
    }

    /// Whether a bar is shown.
    #[cfg(test)]
    pub(crate) fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// The total, when it is known up front.
    pub(crate) fn total(&mut self, calls: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(calls as u64);
            self.fixed = true;
        }
    }

    /// A call was given.
    pub(crate) fn given(&self) {
        if let Some(bar) = &self.bar
            && !self.fixed
        {
            bar.inc_length(1);
        }
    }

    /// A call is over.
    pub(crate) fn ended(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Takes the bar off the terminal.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(feature = "progress")]
impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the progress methods need: the `progress` feature. Without it they
/// still exist, so that a call says which feature to turn on instead of
/// "no method named `progress`".
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "progress bars need pproc's `progress` feature",
    label = "a progress method, without the `progress` feature",
    note = "turn it on in Cargo.toml: `pproc = {{ version = \"...\", features = [\"progress\"] }}`"
)]
pub trait ProgressFeature {}

#[cfg(feature = "progress")]
impl<T: ?Sized> ProgressFeature for T {}

/// The progress methods of a collector without the `progress` feature:
/// bounded by [`ProgressFeature`], so that a call fails with its message.
macro_rules! without_the_feature {
    () => {
        /// Without the `progress` feature: a call says to turn it on.
        #[cfg(not(feature = "progress"))]
        #[doc(hidden)]
        pub fn progress<On: $crate::collect::progress::ProgressFeature>(self, _on: On) -> Self {
            self
        }

        /// Without the `progress` feature: a call says to turn it on.
        #[cfg(not(feature = "progress"))]
        #[doc(hidden)]
        pub fn progress_bar<B: $crate::collect::progress::ProgressFeature>(self, _bar: B) -> Self {
            self
        }
    };
}
pub(crate) use without_the_feature;

// The same methods as with the feature, doing nothing.
#[cfg(not(feature = "progress"))]
#[allow(clippy::unused_self)]
impl Bar {
    pub(crate) fn given(&self) {}

    pub(crate) fn ended(&self) {}

    pub(crate) fn finish(&mut self) {}
}

#[cfg(all(test, feature = "progress"))]
mod tests {
    use super::Bar;

    #[test]
    fn counts_calls_given_and_ended() {
        let mut bar = Bar::default();
        bar.given(); // not shown: nothing happens
        bar.show(true);
        assert!(bar.is_shown());
        bar.given();
        bar.given();
        bar.ended();
        let inner = bar.bar.as_ref().unwrap();
        assert_eq!((inner.position(), inner.length()), (1, Some(2)));
        bar.total(10);
        bar.given();
        let inner = bar.bar.as_ref().unwrap();
        assert_eq!(inner.length(), Some(10), "a fixed total does not grow");
        bar.show(false);
        assert!(!bar.is_shown());
    }
}
