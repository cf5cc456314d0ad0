//! Projections onto the feasible sets `Y` (lower level) and `X` (upper level), and their
//! Jacobians, which the forward-mode hypergradient multiplies through.
//!
//! Where a projection is not differentiable (a point exactly on the boundary) we take the
//! element of the Clarke generalised Jacobian that treats the point as interior, as the
//! journal's Remark 1 allows.

use core::cmp::Ordering;

use nalgebra::{SMatrix, SVector};

use crate::error::ConfigError;
use crate::scalar::Real;

/// A closed convex set with a cheap projection.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Projection<T, const D: usize> {
    /// The whole space: no projection.
    None,
    /// The box `{v : lo ≤ v ≤ hi}` (coordinate-wise).
    Box {
        /// Lower corner.
        lo: SVector<T, D>,
        /// Upper corner.
        hi: SVector<T, D>,
    },
    /// The Euclidean ball `{v : ‖v − center‖ ≤ radius}`.
    Ball {
        /// Centre.
        center: SVector<T, D>,
        /// Radius ≥ 0.
        radius: T,
    },
}

impl<T: Real, const D: usize> Projection<T, D> {
    /// The box `[lo, hi]^D` with the same bounds in every coordinate.
    pub fn cube(lo: T, hi: T) -> Self {
        Projection::Box {
            lo: SVector::repeat(lo),
            hi: SVector::repeat(hi),
        }
    }

    /// Check that the set is non-empty and its description finite.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Projection::None => Ok(()),
            Projection::Box { lo, hi } => {
                for i in 0..D {
                    // NaN bounds make every comparison false: reject them as empty too.
                    if !matches!(
                        lo[i].partial_cmp(&hi[i]),
                        Some(Ordering::Less | Ordering::Equal)
                    ) {
                        return Err(ConfigError::EmptyBox(i));
                    }
                }
                Ok(())
            }
            Projection::Ball { center, radius } => {
                if !(radius.is_finite() && *radius >= T::zero()) {
                    return Err(ConfigError::BadBall);
                }
                if center.iter().any(|c| !c.is_finite()) {
                    return Err(ConfigError::NonFiniteInput("ball center"));
                }
                Ok(())
            }
        }
    }

    /// Project `v` onto the set.
    #[inline(always)]
    pub fn project(&self, v: &SVector<T, D>) -> SVector<T, D> {
        match self {
            Projection::None => *v,
            Projection::Box { lo, hi } => SVector::from_fn(|i, _| clamp(v[i], lo[i], hi[i])),
            Projection::Ball { center, radius } => {
                let d = v - center;
                let n2 = d.dot(&d);
                if n2 <= *radius * *radius {
                    *v
                } else {
                    center + d * (*radius / n2.sqrt())
                }
            }
        }
    }

    /// Multiply `z` (in place) by the Jacobian of the projection at the unprojected point
    /// `v`: `z ← J_Proj(v) · z`.
    #[inline(always)]
    pub fn jacobian_apply<const C: usize>(&self, v: &SVector<T, D>, z: &mut SMatrix<T, D, C>) {
        match self {
            Projection::None => {}
            Projection::Box { lo, hi } => {
                for i in 0..D {
                    if v[i] < lo[i] || v[i] > hi[i] {
                        z.row_mut(i).fill(T::zero());
                    }
                }
            }
            Projection::Ball { center, radius } => {
                let d = v - center;
                let n2 = d.dot(&d);
                if n2 > *radius * *radius {
                    // J = (r/‖d‖)(I − u uᵀ), u = d/‖d‖.
                    let n = n2.sqrt();
                    let u = d / n;
                    let utz = u.transpose() * *z; // 1×C
                    *z -= u * utz;
                    *z *= *radius / n;
                }
            }
        }
    }
}

#[inline(always)]
fn clamp<T: Real>(v: T, lo: T, hi: T) -> T {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Matrix3x2, Vector3};

    #[test]
    fn box_and_ball_project_onto_their_sets() {
        let b = Projection::cube(-1.0_f64, 1.0);
        assert_eq!(
            b.project(&Vector3::new(2.0, -3.0, 0.5)),
            Vector3::new(1.0, -1.0, 0.5)
        );
        let ball = Projection::Ball {
            center: Vector3::zeros(),
            radius: 2.0_f64,
        };
        let p = ball.project(&Vector3::new(3.0, 4.0, 0.0));
        assert!((p - Vector3::new(1.2, 1.6, 0.0)).norm() < 1e-15);
    }

    #[test]
    fn ball_jacobian_matches_finite_differences() {
        let ball = Projection::Ball {
            center: Vector3::new(0.1, 0.0, -0.2),
            radius: 0.5_f64,
        };
        let v = Vector3::new(1.0, -0.7, 0.4);
        let mut z = Matrix3x2::new(1.0, 0.3, -0.5, 2.0, 0.25, -1.0);
        let z0 = z;
        ball.jacobian_apply(&v, &mut z);
        let h = 1e-6;
        for c in 0..2 {
            let dir = z0.column(c).into_owned();
            let fd = (ball.project(&(v + dir * h)) - ball.project(&(v - dir * h))) / (2.0 * h);
            assert!((fd - z.column(c)).norm() < 1e-8, "column {c}");
        }
    }

    #[test]
    fn empty_box_is_rejected() {
        let b = Projection::Box {
            lo: Vector3::new(0.0, 1.0, 0.0),
            hi: Vector3::new(1.0, 0.0, 1.0),
        };
        assert_eq!(b.validate(), Err(ConfigError::EmptyBox(1)));
        let nan = Projection::Box {
            lo: Vector3::repeat(f64::NAN),
            hi: Vector3::repeat(1.0),
        };
        assert_eq!(nan.validate(), Err(ConfigError::EmptyBox(0)));
    }
}
