//! `#[parallel]`: parse, check, generate.

use crate::errors::Errors;
use crate::path;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, Path, PathArguments, ReturnType, Type};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let mut tokens = item;
            tokens.extend(err.into_compile_error());
            return tokens;
        }
    };
    let mut errors = Errors::default();
    let options = Options::parse(args).unwrap_or_else(|err| {
        errors.add(err);
        Options::default()
    });
    let (parsed, problems) = Parallel::read(&func);
    let expanded = match problems.finish() {
        Ok(()) => generate(&func, &parsed, &options),
        Err(err) => {
            errors.add(err);
            stub(&func, &parsed, &options)
        }
    };
    let errors = errors.finish().err().map(syn::Error::into_compile_error);
    quote!(#expanded #errors)
}

/// `#[parallel]`'s options.
struct Options {
    /// Where generated code finds pproc: `crate = path`.
    krate: Path,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            krate: path::default(),
        }
    }
}

impl Options {
    fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut krate = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                if krate.is_some() {
                    return Err(meta.error("repeated `parallel` option `crate`"));
                }
                krate = Some(path::parse(&meta)?);
                Ok(())
            } else {
                let path = &meta.path;
                Err(meta.error(format_args!(
                    "unknown `parallel` option `{}`; expected `crate`",
                    quote!(#path).to_string().replace(' ', "")
                )))
            }
        });
        syn::parse::Parser::parse2(parser, args)?;
        Ok(Self {
            krate: krate.unwrap_or_else(path::default),
        })
    }
}

/// A `#[parallel]` function, as read.
struct Parallel<'a> {
    /// The channel's types as the child sees them, if the first parameter
    /// is a `Channel`.
    channel: Option<(Type, Type)>,
    /// The other parameters: the name used in the generated functions, and
    /// the type.
    params: Vec<(Ident, &'a Type)>,
    output: Type,
    /// Whether the return type passed its checks.
    owned_output: bool,
}

impl<'a> Parallel<'a> {
    /// The function, checked.
    #[cfg(test)]
    fn parse(func: &'a ItemFn) -> syn::Result<Self> {
        let (parsed, errors) = Self::read(func);
        errors.finish().map(|()| parsed)
    }

    /// The function as far as it can be read, and every problem found.
    fn read(func: &'a ItemFn) -> (Self, Errors) {
        let mut errors = Errors::default();
        let sig = &func.sig;
        if let Some(kw) = &sig.asyncness {
            errors.push(kw, "`#[parallel]` functions cannot be `async`");
        }
        if let Some(kw) = &sig.unsafety {
            errors.push(kw, "`#[parallel]` functions cannot be `unsafe`");
        }
        if let Some(abi) = &sig.abi {
            errors.push(abi, "`#[parallel]` functions cannot be `extern`");
        }
        if let Some(kw) = &sig.constness {
            errors.push(kw, "`#[parallel]` functions cannot be `const`");
        }
        if !sig.generics.params.is_empty() {
            errors.push(
                &sig.generics,
                "`#[parallel]` functions cannot be generic: the child must know the concrete types",
            );
        } else if let Some(clause) = &sig.generics.where_clause {
            errors.push(
                clause,
                "`#[parallel]` functions cannot have a `where` clause",
            );
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(variadic, "`#[parallel]` functions cannot be variadic");
        }

        let mut channel = None;
        let mut params = Vec::new();
        for (i, input) in sig.inputs.iter().enumerate() {
            let typed = match input {
                FnArg::Receiver(receiver) => {
                    errors.push(
                        receiver,
                        "`#[parallel]` cannot be used on methods; write a free function that takes the value as an argument",
                    );
                    continue;
                }
                FnArg::Typed(typed) => typed,
            };
            let ty = &*typed.ty;
            if let Some(ends) = channel_types(ty) {
                match ends {
                    Ok(ends) if i == 0 => channel = Some(ends),
                    Ok(_) => errors.push(ty, "the `Channel` must be the first parameter"),
                    Err(err) => errors.add(err),
                }
                continue;
            }
            check_owned(ty, "parameters", &mut errors);
            let name = match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => pat.ident.clone(),
                _ => format_ident!("arg{}", i),
            };
            params.push((name, ty));
        }

        let mut owned_output = true;
        let output = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => {
                let mut problems = Errors::default();
                check_owned(ty, "return types", &mut problems);
                owned_output = problems.is_empty();
                errors.extend(problems.finish().err());
                (**ty).clone()
            }
        };
        let parsed = Self {
            channel,
            params,
            output,
            owned_output,
        };
        (parsed, errors)
    }
}

/// `Some` if `ty` is written `Channel<..>` (under any path): the child's
/// send and receive types, `()` where left out.
fn channel_types(ty: &Type) -> Option<syn::Result<(Type, Type)>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Channel" {
        return None;
    }
    let unit: Type = syn::parse_quote!(());
    let types: Vec<Type> = match &last.arguments {
        PathArguments::None => Vec::new(),
        PathArguments::AngleBracketed(args) => {
            let mut types = Vec::new();
            for arg in &args.args {
                match arg {
                    GenericArgument::Type(ty) => types.push(ty.clone()),
                    other => {
                        return Some(Err(syn::Error::new_spanned(
                            other,
                            "expected a type: `Channel<Send, Recv>`",
                        )));
                    }
                }
            }
            types
        }
        PathArguments::Parenthesized(args) => {
            return Some(Err(syn::Error::new_spanned(
                args,
                "expected `Channel<Send, Recv>`",
            )));
        }
    };
    if types.len() > 2 {
        return Some(Err(syn::Error::new_spanned(
            &last.arguments,
            "a `Channel` has two types: `Channel<Send, Recv>`",
        )));
    }
    let mut types = types.into_iter();
    let send = types.next().unwrap_or_else(|| unit.clone());
    let recv = types.next().unwrap_or(unit);
    Some(Ok((send, recv)))
}

/// Values cross a process boundary by value: no references, no `impl Trait`.
fn check_owned(ty: &Type, what: &str, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => errors.push(
            reference,
            format!(
                "`#[parallel]` {what} must be owned: a reference cannot cross into another process"
            ),
        ),
        Type::ImplTrait(imp) => errors.push(
            imp,
            format!(
                "`#[parallel]` {what} cannot be `impl Trait`: the child must know the concrete type"
            ),
        ),
        Type::Paren(inner) => check_owned(&inner.elem, what, errors),
        Type::Group(inner) => check_owned(&inner.elem, what, errors),
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_owned(elem, what, errors);
            }
        }
        _ => {}
    }
}

fn generate(func: &ItemFn, parsed: &Parallel<'_>, options: &Options) -> TokenStream {
    let krate = path::from_child(&options.krate);
    let outer = &options.krate;
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let ret = &parsed.output;
    let names: Vec<_> = parsed.params.iter().map(|(name, _)| name).collect();
    let types: Vec<_> = parsed.params.iter().map(|(_, ty)| *ty).collect();
    let signature = {
        let inputs = &func.sig.inputs;
        quote!(fn #ident(#inputs) -> #ret).to_string()
    };
    let [send, recv, kind, output] = parent_types(parsed);
    let Typed {
        entry,
        fn_vis,
        params,
        ret: sig_ret,
        send: sig_send,
        recv: sig_recv,
        impls,
    } = typed(
        vis,
        ident,
        &types,
        [ret.to_token_stream(), send, recv, output],
    );
    let shim = quote!((&&__pproc::__private::Shim::<(#(#types,)*), #ret>::new()));
    let run = if parsed.channel.is_some() {
        quote! {
            #shim.run_channel(cx, |ch, (#(#names,)*): (#(#types,)*)| #ident(ch, #(#names),*))
        }
    } else {
        quote! {
            #shim.run(cx, |(#(#names,)*): (#(#types,)*)| #ident(#(#names),*))
        }
    };
    // Each type is checked once, at its own span; the code below names no
    // serde bound of its own (see `__private::Args` and `Shim`).
    let assert = |ty: &dyn ToTokens, span: Span| quote_spanned!(span=> __pproc::__private::assert_crosses::<#ty>(););
    let asserts = types.iter().map(|ty| assert(ty, ty.span()));
    let ret_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => Span::call_site(),
    };
    let assert_ret = assert(ret, ret_span);
    let asserts_channel = parsed
        .channel
        .iter()
        .flat_map(|(s, v)| [assert(s, s.span()), assert(v, v.span())]);
    let [doc_mod, doc_start, doc_call, doc_fn] = docs(ident);

    quote! {
        #func

        #[doc = #doc_mod]
        #[allow(unreachable_pub, clippy::pedantic, clippy::all)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;
            use #krate as __pproc;

            /// The type of the values an exchange stores from this
            /// function: what it returns, or for a channel-style function,
            /// what it sends.
            pub type Output = <Fn as __pproc::__private::Signature>::Output;

            /// The name the function is registered under: its module path.
            pub const NAME: &str = ::core::module_path!();

            #[doc = #doc_fn]
            #fn_vis enum Fn {}

            impl __pproc::Function for Fn {
                const NAME: &'static str = NAME;
            }

            #[doc = #doc_start]
            ///
            /// # Errors
            ///
            /// As [`pproc::Builder::start`](__pproc::Builder::start).
            pub fn start(#(#names: #params),*) -> __pproc::Result<__pproc::Handle<#sig_ret, #sig_send, #sig_recv, #kind>> {
                self::call(#(#names),*).start()
            }

            #[doc = #doc_call]
            #[must_use]
            pub fn call(#(#names: #params),*) -> __pproc::Call<#sig_ret, #sig_send, #sig_recv, #kind, Fn> {
                #[allow(unused_imports)]
                use __pproc::__private::{Encode as _, Unencodable as _};
                (&&__pproc::__private::Args(&(#(#names,)*))).call(NAME)
            }
        }

        // Beside the function, not in its module: here its name, and the
        // types it takes, resolve as they do for the function itself, in a
        // module or in a function body alike.
        const _: () = {
            use #outer as __pproc;

            #impls

            #(#asserts)*
            #assert_ret
            #(#asserts_channel)*

            fn #entry(cx: __pproc::__private::Context) {
                #[allow(unused_imports)]
                use __pproc::__private::{Run as _, Unrunnable as _};
                #run
            }
            __pproc::__private::inventory::submit! {
                __pproc::__private::Entry::new(#ident::NAME, #signature, #entry)
            }
        };
    }
}

/// The docs of the generated module, `start`, `call` and `Fn`.
fn docs(ident: &syn::Ident) -> [String; 4] {
    let doc_mod =
        format!(" Runs [`{ident}`](fn@{ident}) in a child process. Generated by `#[parallel]`.");
    let doc_start = format!(
        " Runs [`{ident}`](fn@super::{ident}) in a new child process. It takes `{ident}`'s arguments, named here through [`Fn`]: the types `{ident}` declares."
    );
    let doc_call = format!(
        " A deferred, serializable call of [`{ident}`](fn@super::{ident}), with `{ident}`'s arguments."
    );
    let doc_fn = format!(
        " [`{ident}`](fn@super::{ident}), as a type: what an exchange routes its values by (see [`pproc::Function`](__pproc::Function))."
    );

    [doc_mod, doc_start, doc_call, doc_fn]
}

/// How the generated module names the function's types: through its own
/// `Fn`, whose impls of `Signature` and `Param<N>`, beside the function,
/// say what they are there where they resolve (a type of a function body
/// is not visible in a module).
struct Typed {
    /// The child's entry function, named after the function: a backtrace
    /// shows it where the function is inlined into it.
    entry: syn::Ident,
    /// `Fn`'s visibility: as far as the function's, and no farther, for
    /// the impls may name types private to its module or its body.
    fn_vis: TokenStream,
    params: Vec<TokenStream>,
    ret: TokenStream,
    send: TokenStream,
    recv: TokenStream,
    /// The impls, for the function's scope.
    impls: TokenStream,
}

fn typed(
    vis: &syn::Visibility,
    ident: &syn::Ident,
    types: &[&Type],
    parent: [TokenStream; 4],
) -> Typed {
    let [ret, send, recv, output] = parent;
    let indices: Vec<_> = (0..types.len()).map(syn::Index::from).collect();
    let sig = |item: &str| {
        let item = syn::Ident::new(item, Span::call_site());
        quote!(<Fn as __pproc::__private::Signature>::#item)
    };
    Typed {
        entry: format_ident!("__pproc_run_{}", ident),
        fn_vis: path::vis_from_child(vis),
        params: indices
            .iter()
            .map(|i| quote!(<Fn as __pproc::__private::Param<#i>>::Type))
            .collect(),
        ret: sig("Ret"),
        send: sig("Send"),
        recv: sig("Recv"),
        impls: quote! {
            impl __pproc::__private::Signature for #ident::Fn {
                type Ret = #ret;
                type Send = #send;
                type Recv = #recv;
                type Output = #output;
            }
            #(
                impl __pproc::__private::Param<#indices> for #ident::Fn {
                    type Type = #types;
                }
            )*
        },
    }
}

/// The types of the parent's end: what it sends, what it receives, the
/// delivery, and `Output`. The parent mirrors the child: it sends what the
/// child receives and receives what the child sends.
fn parent_types(parsed: &Parallel<'_>) -> [TokenStream; 4] {
    if let Some((child_send, child_recv)) = &parsed.channel {
        [
            quote!(#child_recv),
            quote!(#child_send),
            quote!(__pproc::Streams),
            quote!(#child_send),
        ]
    } else {
        let ret = &parsed.output;
        [
            quote!(()),
            quote!(()),
            quote!(__pproc::Returns),
            quote!(#ret),
        ]
    }
}

/// What a rejected function expands to beside its errors: the function as
/// written, and the module `generate` would add, with the same items and
/// bodies that never run (the program does not compile). Code that uses the
/// module then compiles as it would, so that the rejection is the only
/// error, and IDEs keep completing (thiserror's `fallback.rs`).
fn stub(func: &ItemFn, parsed: &Parallel<'_>, options: &Options) -> TokenStream {
    // A method's module would sit in its `impl` block, where modules cannot.
    if func.sig.receiver().is_some() {
        return quote!(#func);
    }
    let krate = path::from_child(&options.krate);
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let generics = &func.sig.generics;
    let where_clause = &generics.where_clause;
    let types: Vec<_> = parsed.params.iter().map(|(_, ty)| *ty).collect();
    let [send, recv, kind, mut output] = parent_types(parsed);
    let mut ret = parsed.output.to_token_stream();
    if !parsed.owned_output {
        // A reference or an `impl Trait` would be an error of its own here.
        ret = quote!(());
        if parsed.channel.is_none() {
            output = quote!(());
        }
    }
    if !generics.params.is_empty() {
        // An alias cannot name the function's type parameters.
        output = quote!(());
    }
    let doc =
        format!(" Runs [`{ident}`](fn@{ident}) in a child process. Generated by `#[parallel]`.");

    quote! {
        #func

        #[doc = #doc]
        #[allow(unreachable_pub, missing_docs, clippy::pedantic, clippy::all)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;
            use #krate as __pproc;

            pub type Output = #output;

            pub const NAME: &str = ::core::module_path!();

            pub enum Fn {}

            impl __pproc::Function for Fn {
                const NAME: &'static str = NAME;
            }

            pub fn start #generics (#(_: #types),*) -> __pproc::Result<__pproc::Handle<#ret, #send, #recv, #kind>>
            #where_clause
            {
                ::core::unreachable!()
            }

            pub fn call #generics (#(_: #types),*) -> __pproc::Call<#ret, #send, #recv, #kind, Fn>
            #where_clause
            {
                ::core::unreachable!()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(item: TokenStream) -> String {
        let func: ItemFn = syn::parse2(item).unwrap();
        Parallel::parse(&func)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_plain_and_channel_functions() {
        let func: ItemFn = syn::parse_quote!(
            fn f(ch: pproc::Channel<u8, String>, a: u32, (b, c): (u8, u8)) -> u64 {
                0
            }
        );
        let parsed = Parallel::parse(&func).unwrap();
        assert!(parsed.channel.is_some());
        let names: Vec<_> = parsed.params.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["a", "arg2"]);
    }

    #[test]
    fn channel_defaults_to_unit() {
        let ty: Type = syn::parse_quote!(Channel<u8>);
        let (send, recv) = channel_types(&ty).unwrap().unwrap();
        assert_eq!(quote!(#send).to_string(), "u8");
        assert_eq!(quote!(#recv).to_string(), "()");
        assert!(channel_types(&syn::parse_quote!(Vec<u8>)).is_none());
    }

    #[test]
    fn reports_every_problem() {
        let msg = errors(quote!(
            async fn f<T>(x: &str) {}
        ));
        assert!(msg.contains("async"), "{msg}");
        let func: ItemFn = syn::parse2(quote!(
            async fn f<T>(x: &str, y: impl Copy) {}
        ))
        .unwrap();
        let err = Parallel::parse(&func).err().unwrap();
        assert_eq!(err.into_iter().count(), 4);
    }

    #[test]
    fn channel_must_come_first() {
        assert!(
            errors(quote!(
                fn f(a: u8, ch: Channel<u8, u8>) {}
            ))
            .contains("first parameter")
        );
    }

    #[test]
    fn takes_a_crate_path() {
        let options = Options::parse(quote!(crate = ::my::pproc)).unwrap();
        let krate = options.krate;
        assert_eq!(quote!(#krate).to_string(), ":: my :: pproc");
        let err = Options::parse(quote!(crate = "pproc")).err().unwrap();
        assert!(err.to_string().contains("not a string"), "{err}");
        let err = Options::parse(quote!(retry = 3)).err().unwrap();
        assert!(err.to_string().contains("expected `crate`"), "{err}");
    }

    #[test]
    fn a_rejected_function_keeps_its_module() {
        let expanded = expand(
            quote!(),
            quote!(
                async fn fetch(x: u32) -> u32 {
                    x
                }
            ),
        )
        .to_string();
        for item in [
            "mod fetch",
            "pub fn start",
            "pub fn call",
            "NAME",
            "Output",
            "enum Fn",
        ] {
            assert!(expanded.contains(item), "{item} missing from {expanded}");
        }
        assert!(expanded.contains("compile_error"), "{expanded}");
        assert!(
            !expanded.contains("submit"),
            "a stub registers nothing: {expanded}"
        );
    }

    #[test]
    fn a_rejected_method_gets_no_module() {
        let expanded = expand(
            quote!(),
            quote!(
                fn get(&self) -> u32 {
                    0
                }
            ),
        )
        .to_string();
        assert!(!expanded.contains("mod get"), "{expanded}");
        assert!(expanded.contains("compile_error"), "{expanded}");
    }
}
