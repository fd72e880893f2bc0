//! `#[derive(Exchange)]`: parse, check, generate.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Member, Path, Type};

use crate::errors::Errors;
use crate::path;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(err) => return err.into_compile_error(),
    };
    let krate = container_options(&input.attrs);
    match (krate, Store::parse(&input)) {
        (Ok(krate), Ok(store)) => generate(&input, &store, &krate),
        (krate, store) => {
            let mut errors = Errors::default();
            let krate = krate.unwrap_or_else(|err| {
                errors.add(err);
                path::default()
            });
            errors.extend(store.err());
            let errors = errors.finish().err().map(syn::Error::into_compile_error);
            let stub = stub(&input, &krate);
            quote!(#stub #errors)
        }
    }
}

/// What a rejected struct gets beside its errors: a `Store` of every value
/// whose body never runs (the program does not compile), so that exchanges
/// built on it compile as they would and the rejection is the only error
/// (thiserror's `fallback.rs`).
fn stub(input: &DeriveInput, krate: &Path) -> TokenStream {
    let name = &input.ident;
    let value = format_ident!("__PprocValue");
    let mut generics = input.generics.clone();
    generics.params.push(syn::parse_quote!(#value));
    let (impl_generics, _, _) = generics.split_for_impl();
    let (_, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            use #krate as __pproc;

            #[automatically_derived]
            impl #impl_generics __pproc::Store<#value> for #name #ty_generics #where_clause {
                fn store(&mut self, _: #value, _: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// The struct's own `#[store(crate = path)]`: where generated code finds
/// pproc.
fn container_options(attrs: &[Attribute]) -> syn::Result<Path> {
    let mut krate = None;
    let mut errors = Errors::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("store")) {
        if let syn::Meta::Path(path) = &attr.meta {
            errors.push(
                path,
                "`#[store]` marks a field; on the struct, write `#[store(crate = path)]`",
            );
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                if krate.is_some() {
                    return Err(meta.error("repeated `store` option `crate`"));
                }
                krate = Some(path::parse(&meta)?);
                Ok(())
            } else {
                Err(meta.error(format_args!(
                    "unknown `store` option `{}` on a struct; expected `crate`",
                    ident(&meta.path)
                )))
            }
        });
        errors.extend(parsed.err());
    }
    errors.finish()?;
    Ok(krate.unwrap_or_else(path::default))
}

/// What a `#[store]` field does.
enum Kind {
    /// Takes every value.
    Plain,
    /// Takes the values of one function, through `Extend` or a function.
    From { func: Path, with: Option<Path> },
    /// Takes the failures.
    Errors,
}

struct Field<'a> {
    member: Member,
    ty: &'a Type,
    kind: Kind,
}

/// A checked `#[derive(Exchange)]` struct.
struct Store<'a> {
    fields: Vec<Field<'a>>,
}

impl<'a> Store<'a> {
    fn parse(input: &'a DeriveInput) -> syn::Result<Self> {
        let fields = match &input.data {
            Data::Struct(data) => &data.fields,
            Data::Enum(data) => {
                return Err(syn::Error::new_spanned(
                    data.enum_token,
                    "`#[derive(Exchange)]` works on structs: an enum cannot store results",
                ));
            }
            Data::Union(data) => {
                return Err(syn::Error::new_spanned(
                    data.union_token,
                    "`#[derive(Exchange)]` works on structs, not unions",
                ));
            }
        };
        let mut errors = Errors::default();
        let mut out = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            let member = field
                .ident
                .clone()
                .map_or_else(|| Member::Unnamed(syn::Index::from(i)), Member::Named);
            for attr in field.attrs.iter().filter(|a| a.path().is_ident("store")) {
                match parse_kind(attr) {
                    Ok(kind) => out.push(Field {
                        member: member.clone(),
                        ty: &field.ty,
                        kind,
                    }),
                    Err(err) => errors.add(err),
                }
            }
        }
        if errors.is_empty() {
            check(input, fields, &out, &mut errors);
        }
        errors.finish()?;
        Ok(Self { fields: out })
    }
}

fn parse_kind(attr: &syn::Attribute) -> syn::Result<Kind> {
    if let syn::Meta::Path(_) = attr.meta {
        return Ok(Kind::Plain);
    }
    let mut from: Option<Path> = None;
    let mut with: Option<Path> = None;
    let mut errors = None;
    attr.parse_nested_meta(|meta| {
        let repeated = || {
            meta.error(format_args!(
                "repeated `store` option `{}`",
                ident(&meta.path)
            ))
        };
        if meta.path.is_ident("from") {
            if from.is_some() {
                return Err(repeated());
            }
            from = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("with") {
            if with.is_some() {
                return Err(repeated());
            }
            with = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("errors") {
            if errors.is_some() {
                return Err(repeated());
            }
            errors = Some(meta.path.clone());
        } else if meta.path.is_ident("crate") {
            return Err(meta
                .error("`crate` is an option of the struct's `#[store(...)]`, not of a field's"));
        } else {
            return Err(meta.error(format_args!(
                "unknown `store` option `{}`; expected `from`, `with` or `errors`",
                ident(&meta.path)
            )));
        }
        Ok(())
    })?;
    match (from, with, errors) {
        (None, None, None) => Ok(Kind::Plain),
        (None, None, Some(_)) => Ok(Kind::Errors),
        (Some(_), _, Some(path)) | (None, Some(_), Some(path)) => Err(syn::Error::new_spanned(
            path,
            "`errors` takes the failures: it cannot be combined with `from` or `with`",
        )),
        (None, Some(with), None) => Err(syn::Error::new_spanned(
            with,
            "`with` needs `from`: name the `#[parallel]` function whose values it takes",
        )),
        (Some(func), with, None) => Ok(Kind::From { func, with }),
    }
}

fn ident(path: &Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}

/// Checks across fields: something to store, one errors field, `from`
/// everywhere or nowhere, each function routed once.
fn check(input: &DeriveInput, fields: &Fields, out: &[Field<'_>], errors: &mut Errors) {
    let stores = out
        .iter()
        .filter(|f| !matches!(f.kind, Kind::Errors))
        .count();
    if stores == 0 {
        let span_of: &dyn quote::ToTokens = if fields.is_empty() {
            &input.ident
        } else {
            fields
        };
        errors.push(
            span_of,
            "`#[derive(Exchange)]` needs a `#[store]` field to take the results",
        );
    }
    let mut seen_errors = false;
    let mut routed: Vec<String> = Vec::new();
    let any_from = out.iter().any(|f| matches!(f.kind, Kind::From { .. }));
    for field in out {
        match &field.kind {
            Kind::Errors if seen_errors => errors.push(
                field.ty,
                "only one `#[store(errors)]` field can take the failures",
            ),
            Kind::Errors => seen_errors = true,
            Kind::Plain if any_from => errors.push(
                field.ty,
                "this struct routes values with `from`: give this field `#[store(from = ...)]` too",
            ),
            Kind::Plain => {}
            Kind::From { func, .. } => {
                let name = ident(func);
                if routed.contains(&name) {
                    errors.push(
                        func,
                        format_args!("the values of `{name}` already go to another field"),
                    );
                }
                routed.push(name);
            }
        }
    }
}

fn generate(input: &DeriveInput, store: &Store<'_>, krate: &Path) -> TokenStream {
    let impls = if store
        .fields
        .iter()
        .any(|f| matches!(f.kind, Kind::From { .. }))
    {
        routed(input, store)
    } else {
        plain(input, store)
    };
    quote! {
        const _: () = {
            use #krate as __pproc;

            #impls
        };
    }
}

/// Where a struct is generic, the bounds its fields need go in the impl's
/// `where` clause, and a field that cannot take the values fails where the
/// exchange is used; where it is not, the code that fills a field is
/// spanned at the field's type, so that the error is there, once.
struct Impl {
    generic: bool,
    bounds: Vec<TokenStream>,
}

impl Impl {
    fn new(input: &DeriveInput) -> Self {
        let bounds = input
            .generics
            .where_clause
            .iter()
            .flat_map(|w| w.predicates.iter().map(|p| quote!(#p)))
            .collect();
        Self {
            generic: !input.generics.params.is_empty(),
            bounds,
        }
    }

    /// Code that extends `member` of `receiver`, of type `ty`, with
    /// `value`, of type `value_ty`.
    fn extend(
        &mut self,
        receiver: &TokenStream,
        member: &Member,
        ty: &Type,
        value_ty: &TokenStream,
    ) -> TokenStream {
        if self.generic {
            self.bounds
                .push(quote!(#ty: ::core::iter::Extend<#value_ty>));
        }
        quote_spanned!(ty.span()=> __pproc::__private::extend::<#ty, #value_ty>(&mut #receiver.#member, value);)
    }

    /// The errors field of `receiver` extended with `error`, if there is
    /// such a field.
    fn fail(&mut self, parsed: &Store<'_>, receiver: &TokenStream) -> Option<TokenStream> {
        let field = parsed
            .fields
            .iter()
            .find(|f| matches!(f.kind, Kind::Errors))?;
        let (member, ty) = (&field.member, field.ty);
        if self.generic {
            self.bounds
                .push(quote!(#ty: ::core::iter::Extend<__pproc::Failure>));
        }
        Some(quote_spanned!(ty.span()=>
            __pproc::__private::fail::<#ty>(&mut #receiver.#member, error, origin)
        ))
    }
}

/// A struct that routes: `Route<Self, f::Output>` for each field's
/// function `f::Fn`, and no `Store`, so that a call of any other function
/// does not compile.
fn routed(input: &DeriveInput, parsed: &Store<'_>) -> TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let store = quote!(store);
    let routes = parsed.fields.iter().filter_map(|f| {
        let Kind::From { func, with } = &f.kind else {
            return None;
        };
        let mut parts = Impl::new(input);
        let member = &f.member;
        let take = if let Some(with) = with {
            quote!(#with(&mut store.#member, value);)
        } else {
            parts.extend(&store, member, f.ty, &quote!(#func::Output))
        };
        let failed = parts.fail(parsed, &store).map(|fail| {
            quote! {
                fn failed(store: &mut #name #ty_generics, error: __pproc::Error, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                    #fail
                }
            }
        });
        let bounds = &parts.bounds;
        Some(quote! {
            #[automatically_derived]
            impl #impl_generics __pproc::Route<#name #ty_generics, #func::Output> for #func::Fn
            where
                #(#bounds,)*
            {
                fn store(store: &mut #name #ty_generics, value: #func::Output, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                    let _ = origin;
                    #take
                    ::core::result::Result::Ok(())
                }

                #failed
            }
        })
    });
    quote!(#(#routes)*)
}

/// A struct that takes every value: one `Store` for every type its fields
/// take; all but the last get a clone.
fn plain(input: &DeriveInput, store: &Store<'_>) -> TokenStream {
    let name = &input.ident;
    let value = format_ident!("__PprocValue");
    let mut generics = input.generics.clone();
    generics.params.push(syn::parse_quote!(#value: 'static));
    let (impl_generics, _, _) = generics.split_for_impl();
    let (_, ty_generics, _) = input.generics.split_for_impl();
    let mut parts = Impl::new(input);
    let plain: Vec<_> = store
        .fields
        .iter()
        .filter(|f| matches!(f.kind, Kind::Plain))
        .collect();
    parts.bounds.extend(plain.iter().map(|f| {
        let ty = f.ty;
        quote!(#ty: ::core::iter::Extend<#value>)
    }));
    if plain.len() > 1 {
        parts.bounds.push(quote!(#value: ::core::clone::Clone));
    }
    let last = plain.len() - 1;
    let takes = plain.iter().enumerate().map(|(i, f)| {
        let member = &f.member;
        let item = if i == last {
            quote!(value)
        } else {
            quote!(::core::clone::Clone::clone(&value))
        };
        quote!(::core::iter::Extend::extend(&mut self.#member, ::core::option::Option::Some(#item));)
    });
    let failed = parts.fail(store, &quote!(self)).map(|fail| {
        quote! {
            fn failed(&mut self, error: __pproc::Error, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                #fail
            }
        }
    });
    let bounds = &parts.bounds;
    quote! {
        #[automatically_derived]
        impl #impl_generics __pproc::Store<#value> for #name #ty_generics
        where
            #(#bounds,)*
        {
            fn store(&mut self, value: #value, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                let _ = origin;
                #(#takes)*
                ::core::result::Result::Ok(())
            }

            #failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(input: TokenStream) -> String {
        let input: DeriveInput = syn::parse2(input).unwrap();
        Store::parse(&input)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_plain_routed_and_errors_fields() {
        assert_eq!(
            errors(quote!(
                struct S {
                    #[store]
                    a: Vec<u8>,
                    #[store(errors)]
                    e: Vec<F>,
                }
            )),
            ""
        );
        assert_eq!(
            errors(quote!(
                struct S {
                    #[store(from = f)]
                    a: Vec<u8>,
                    #[store(from = m::g, with = h)]
                    b: u8,
                }
            )),
            ""
        );
    }

    #[test]
    fn rejects_misuse() {
        assert!(
            errors(quote!(
                struct S {
                    a: u8,
                }
            ))
            .contains("needs a `#[store]` field")
        );
        assert!(
            errors(quote!(
                enum E {
                    A,
                }
            ))
            .contains("works on structs")
        );
        assert!(
            errors(quote!(
                struct S {
                    #[store(form = f)]
                    a: Vec<u8>,
                }
            ))
            .contains("unknown `store` option `form`")
        );
        assert!(
            errors(quote!(
                struct S {
                    #[store(from = f, from = g)]
                    a: Vec<u8>,
                }
            ))
            .contains("repeated")
        );
        assert!(
            errors(quote!(
                struct S {
                    #[store(with = f)]
                    a: Vec<u8>,
                }
            ))
            .contains("`with` needs `from`")
        );
        assert!(
            errors(quote!(
                struct S {
                    #[store(from = f)]
                    a: Vec<u8>,
                    #[store]
                    b: Vec<u8>,
                }
            ))
            .contains("routes values")
        );
        assert!(
            errors(quote!(
                struct S {
                    #[store(from = f)]
                    a: Vec<u8>,
                    #[store(from = f)]
                    b: Vec<u8>,
                }
            ))
            .contains("already go")
        );
    }

    #[test]
    fn the_struct_takes_a_crate_path() {
        let input: DeriveInput = syn::parse_quote!(
            #[store(crate = renamed)]
            struct S {
                #[store]
                a: Vec<u8>,
            }
        );
        let krate = container_options(&input.attrs).unwrap();
        assert_eq!(quote!(#krate).to_string(), "renamed");
        assert!(
            errors(quote!(
                struct S {
                    #[store(crate = renamed)]
                    a: Vec<u8>,
                }
            ))
            .contains("option of the struct")
        );
    }

    #[test]
    fn a_routing_struct_gets_routes_and_no_store() {
        let expanded = expand(quote!(
            struct S {
                #[store(from = f)]
                a: Vec<u8>,
                #[store(from = m::g)]
                b: Vec<u16>,
            }
        ))
        .to_string();
        assert_eq!(expanded.matches("Route <").count(), 2, "{expanded}");
        assert!(!expanded.contains("Store <"), "{expanded}");
    }

    #[test]
    fn a_rejected_struct_keeps_a_store() {
        let expanded = expand(quote!(
            struct S {
                #[store(form = f)]
                a: Vec<u8>,
            }
        ))
        .to_string();
        assert!(expanded.contains("Store <"), "{expanded}");
        assert!(expanded.contains("compile_error"), "{expanded}");
    }
}
