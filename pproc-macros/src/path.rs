//! The `crate = path` option of both macros: where generated code finds
//! pproc, for a program that depends on it under another name or reaches it
//! through a re-export.

use syn::meta::ParseNestedMeta;
use syn::{LitStr, Path, PathSegment};

/// The value of `crate = path`: a path, as a `use` at the item's place
/// would write it.
pub(crate) fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        return Err(syn::Error::new_spanned(
            lit,
            "`crate` takes a path, not a string: `crate = my_pproc`",
        ));
    }
    Path::parse_mod_style(value)
}

/// Where generated code finds pproc unless told: `::pproc`.
pub(crate) fn default() -> Path {
    syn::parse_quote!(::pproc)
}

/// `path`, written at an item, as code one module further down names it
/// (`#[parallel]` generates a module): `self::x` is `super::x` there, and
/// `super::x` is `super::super::x`. Other paths read the same in both
/// places: absolute ones, `crate::…`, and names the generated module
/// imports from its parent.
pub(crate) fn from_child(path: &Path) -> Path {
    let mut path = path.clone();
    if path.leading_colon.is_none()
        && let Some(first) = path.segments.first_mut()
    {
        if first.ident == "self" {
            first.ident = syn::Ident::new("super", first.ident.span());
        } else if first.ident == "super" {
            let up = PathSegment::from(syn::Ident::new("super", first.ident.span()));
            path.segments.insert(0, up);
        }
    }
    path
}

/// The visibility `vis`, written at an item, as an item one module
/// further down writes it to be visible just as far: private is
/// `pub(super)` there, `pub(super)` is `pub(in super::super)`.
pub(crate) fn vis_from_child(vis: &syn::Visibility) -> proc_macro2::TokenStream {
    use quote::quote;
    match vis {
        syn::Visibility::Public(_) => quote!(pub),
        syn::Visibility::Inherited => quote!(pub(super)),
        syn::Visibility::Restricted(restricted) => {
            let path = &*restricted.path;
            if path.is_ident("crate") {
                quote!(pub(crate))
            } else if path.is_ident("self") {
                quote!(pub(super))
            } else if path.is_ident("super") {
                quote!(pub(in super::super))
            } else {
                let path = from_child(path);
                quote!(pub(in #path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn child(path: &Path) -> String {
        let path = from_child(path);
        quote!(#path).to_string()
    }

    #[test]
    fn relative_paths_climb_one_module() {
        assert_eq!(child(&syn::parse_quote!(self::pp)), "super :: pp");
        assert_eq!(child(&syn::parse_quote!(super::pp)), "super :: super :: pp");
    }

    #[test]
    fn visibilities_reach_as_far_from_one_module_down() {
        let child = |vis: syn::Visibility| vis_from_child(&vis).to_string();
        assert_eq!(child(syn::parse_quote!(pub)), "pub");
        assert_eq!(child(syn::Visibility::Inherited), "pub (super)");
        assert_eq!(child(syn::parse_quote!(pub(crate))), "pub (crate)");
        assert_eq!(child(syn::parse_quote!(pub(self))), "pub (super)");
        assert_eq!(
            child(syn::parse_quote!(pub(super))),
            "pub (in super :: super)"
        );
        assert_eq!(
            child(syn::parse_quote!(pub(in crate::a))),
            "pub (in crate :: a)"
        );
    }

    #[test]
    fn other_paths_stay() {
        assert_eq!(child(&syn::parse_quote!(::pproc)), ":: pproc");
        assert_eq!(child(&syn::parse_quote!(crate::pp)), "crate :: pp");
        assert_eq!(child(&syn::parse_quote!(renamed)), "renamed");
        assert_eq!(
            child(&syn::parse_quote!(support::pproc)),
            "support :: pproc"
        );
    }
}
