//! Chained setters for the `#[non_exhaustive]` configuration structs of cohort and
//! cohort-proto.
//!
//! A `#[non_exhaustive]` struct cannot be built with a struct expression outside its crate
//! (not even `Config { port: 0, ..Config::default() }`), which is what lets a field be
//! added without breaking anyone. Its users start from `Default` (or a named preset) and
//! either assign the public fields or chain these setters:
//! `GroupConfig::default().witnesses(3).host_check(false)`.

/// Implements, for each listed field of a config struct, a by-value setter of the same
/// name that sets the field and returns the config. `[into] field: T` makes the setter take
/// `impl Into<T>` (for `Bytes`, `Option<_>`); plain `field: T` takes `T`, so integer
/// literals infer as usual.
#[doc(hidden)]
#[macro_export]
macro_rules! config_setters {
    ($ty:ty { $($([$into:ident])? $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $( $crate::config_setters!(@one $field: $t $(, $into)?); )*
        }
    };
    (@one $field:ident: $t:ty, into) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](#structfield.", stringify!($field),
            ") (see there) and returns the config.")]
        #[must_use]
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = $field.into();
            self
        }
    };
    (@one $field:ident: $t:ty) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](#structfield.", stringify!($field),
            ") (see there) and returns the config.")]
        #[must_use]
        pub fn $field(mut self, $field: $t) -> Self {
            self.$field = $field;
            self
        }
    };
}
