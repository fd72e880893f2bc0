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
    let name = &input.ident;
    let value = format_ident!("__PprocValue");
    let mut generics = input.generics.clone();
    generics.params.push(syn::parse_quote!(#value: 'static));
    let (impl_generics, _, _) = generics.split_for_impl();
    let (_, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut bounds: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(|p| quote!(#p)).collect())
        .unwrap_or_default();
    // Type checks aimed at the fields, where the types are known (not in
    // generic structs, whose checks happen where the exchange is used).
    let mut asserts = Vec::new();
    let generic = !input.generics.params.is_empty();

    let plain: Vec<_> = store
        .fields
        .iter()
        .filter(|f| matches!(f.kind, Kind::Plain))
        .collect();
    let body = if plain.is_empty() {
        routed_body(store, generic, &mut asserts)
    } else {
        plain_body(&plain, &value, &mut bounds)
    };

    let failed = store
        .fields
        .iter()
        .find(|f| matches!(f.kind, Kind::Errors))
        .map(|f| {
            let (member, ty) = (&f.member, f.ty);
            if generic {
                bounds.push(quote!(#ty: ::core::iter::Extend<__pproc::Failure>));
            } else {
                asserts.push(quote_spanned!(ty.span()=>
                    __pproc::__private::assert_extend::<#ty, __pproc::Failure>();
                ));
            }
            quote! {
                fn failed(&mut self, error: __pproc::Error, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                    ::core::iter::Extend::extend(
                        &mut self.#member,
                        ::core::option::Option::Some(__pproc::Failure::new(error, origin)),
                    );
                    ::core::result::Result::Ok(())
                }
            }
        });

    quote! {
        const _: () = {
            use #krate as __pproc;

            #(#asserts)*

            #[automatically_derived]
            impl #impl_generics __pproc::Store<#value> for #name #ty_generics
            where
                #(#bounds,)*
            {
                fn store(&mut self, value: #value, origin: &__pproc::Origin<'_>) -> __pproc::Result<()> {
                    #body
                }

                #failed
            }
        };
    }
}

/// Each value goes to the field of the function that produced it.
fn routed_body(store: &Store<'_>, generic: bool, asserts: &mut Vec<TokenStream>) -> TokenStream {
    let routes = store.fields.iter().filter_map(|f| {
        let Kind::From { func, with } = &f.kind else {
            return None;
        };
        let (member, ty) = (&f.member, f.ty);
        if !generic && with.is_none() {
            asserts.push(quote_spanned!(ty.span()=>
                __pproc::__private::assert_extend::<#ty, #func::Output>();
            ));
        }
        let take = if let Some(with) = with {
            quote!(#with(&mut self.#member, value);)
        } else {
            quote!(::core::iter::Extend::extend(&mut self.#member, ::core::option::Option::Some(value));)
        };
        Some(quote! {
            if origin.name() == #func::NAME {
                let value: #func::Output = __pproc::__private::downcast(value, origin)?;
                #take
                return ::core::result::Result::Ok(());
            }
        })
    });
    let routes: Vec<_> = routes.collect();
    quote! {
        #(#routes)*
        let _ = value;
        ::core::result::Result::Err(__pproc::__private::unrouted(origin))
    }
}

/// Every plain field takes every value; all but the last get a clone.
fn plain_body(
    plain: &[&Field<'_>],
    value: &syn::Ident,
    bounds: &mut Vec<TokenStream>,
) -> TokenStream {
    bounds.extend(plain.iter().map(|f| {
        let ty = f.ty;
        quote!(#ty: ::core::iter::Extend<#value>)
    }));
    if plain.len() > 1 {
        bounds.push(quote!(#value: ::core::clone::Clone));
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
    quote! {
        let _ = origin;
        #(#takes)*
        ::core::result::Result::Ok(())
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
}
