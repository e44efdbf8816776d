//! An ensemble: several networks of the same input and output shapes whose outputs are averaged.

use fracture_tensor::Tensor4;

use crate::error::{LayersError, Result};
use crate::layer::{Layer, Mode};
use crate::sequential::Sequential;

/// The mean of its members' outputs: `y = (m_0(x) + ... + m_{k-1}(x)) / k`.
///
/// Applied to logits, this averages the members' log-odds. Member `i`'s tensors are named
/// `i.<its own names>` (prefix them further by nesting the ensemble in a [`Sequential`]).
///
/// PyTorch equivalent: no built-in module; `torch.stack([m(x) for m in members]).mean(0)` over
/// an `nn.ModuleList` of the members, whose state-dict names it shares.
///
/// ```
/// use fracture_layers::*;
/// use fracture_tensor::Tensor4;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let member = |rng: &mut rand_chacha::ChaCha8Rng| -> Result<Sequential> {
///     Sequential::new().with("fc", LinearConfig::new(3, 2).init(rng)?)
/// };
/// let (mut a, mut b) = (member(&mut rng)?, member(&mut rng)?);
/// let x = Tensor4::from_vec([1, 3, 1, 1], vec![1.0, -2.0, 0.5])?;
/// let (ya, yb) = (a.forward(&x, Mode::Eval)?, b.forward(&x, Mode::Eval)?);
/// let mut ens = Ensemble::new(vec![a, b])?;
/// let y = ens.forward(&x, Mode::Eval)?;
/// for i in 0..2 {
///     let mean = (ya.as_slice()[i] + yb.as_slice()[i]) / 2.0;
///     assert!((y.as_slice()[i] - mean).abs() < 1e-6);
/// }
/// assert_eq!(ens.named_params()[0].0, "0.fc.weight");
/// assert_eq!(ens.named_params()[2].0, "1.fc.weight");
/// assert!(Ensemble::new(Vec::new()).is_err());
/// # Ok::<(), LayersError>(())
/// ```
pub struct Ensemble {
    members: Vec<Sequential>,
    /// Local names of the members, `"0"`, `"1"`, ... (for [`Layer::children`]).
    names: Vec<String>,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("members", &self.members)
            .finish()
    }
}

impl Ensemble {
    /// An ensemble of `members` (at least one).
    pub fn new(members: Vec<Sequential>) -> Result<Self> {
        if members.is_empty() {
            return Err(LayersError::config(
                "Ensemble",
                "an ensemble needs at least one member",
            ));
        }
        let names = (0..members.len()).map(|i| i.to_string()).collect();
        Ok(Ensemble { members, names })
    }

    /// The members, in order.
    pub fn members(&self) -> &[Sequential] {
        &self.members
    }

    /// The members, mutably (e.g. to run one of them alone).
    pub fn members_mut(&mut self) -> &mut [Sequential] {
        &mut self.members
    }

    /// Takes the members back out.
    pub fn into_members(self) -> Vec<Sequential> {
        self.members
    }

    /// The gradient each member receives: `dy / k`.
    fn member_dy(&self, dy: &Tensor4) -> Tensor4 {
        let mut d = dy.clone();
        let w = 1.0 / self.members.len() as f32;
        d.as_slice_mut().iter_mut().for_each(|v| *v *= w);
        d
    }
}

impl Layer for Ensemble {
    fn kind(&self) -> &'static str {
        "Ensemble"
    }

    fn forward(&mut self, x: &Tensor4, mode: Mode) -> Result<Tensor4> {
        let k = self.members.len();
        let mut sum = self.members[0].forward(x, mode)?;
        for m in &mut self.members[1..] {
            let y = m.forward(x, mode)?;
            if y.shape() != sum.shape() {
                return Err(LayersError::shape(
                    "Ensemble",
                    format!("every member's output of shape {:?}", sum.shape()),
                    &y.shape(),
                ));
            }
            for (s, v) in sum.as_slice_mut().iter_mut().zip(y.as_slice()) {
                *s += v;
            }
        }
        let w = 1.0 / k as f32;
        sum.as_slice_mut().iter_mut().for_each(|v| *v *= w);
        Ok(sum)
    }

    fn backward(&mut self, dy: &Tensor4) -> Result<Tensor4> {
        let d = self.member_dy(dy);
        let mut dx = self.members[0].backward(&d)?;
        for m in &mut self.members[1..] {
            let g = m.backward(&d)?;
            for (a, b) in dx.as_slice_mut().iter_mut().zip(g.as_slice()) {
                *a += b;
            }
        }
        Ok(dx)
    }

    fn backward_params_only(&mut self, dy: &Tensor4) -> Result<()> {
        let d = self.member_dy(dy);
        for m in &mut self.members {
            m.backward_params_only(&d)?;
        }
        Ok(())
    }

    fn children(&self) -> Vec<(&str, &dyn Layer)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.members.iter().map(|m| m as &dyn Layer))
            .collect()
    }

    fn children_mut(&mut self) -> Vec<(&str, &mut dyn Layer)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.members.iter_mut().map(|m| m as &mut dyn Layer))
            .collect()
    }
}
