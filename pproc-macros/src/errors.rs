//! Collecting every problem of an item, to report them all at once.

/// The errors found so far, combined into one on [`finish`](Self::finish).
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    /// An error spanning `tokens`.
    pub(crate) fn push(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.0.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error already built.
    pub(crate) fn add(&mut self, err: syn::Error) {
        self.0.push(err);
    }

    /// Whether nothing was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` if nothing was found, else every error in one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0
            .into_iter()
            .reduce(|mut all, err| {
                all.combine(err);
                all
            })
            .map_or(Ok(()), Err)
    }
}

impl Extend<syn::Error> for Errors {
    fn extend<I: IntoIterator<Item = syn::Error>>(&mut self, errors: I) {
        self.0.extend(errors);
    }
}
