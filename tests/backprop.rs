//! The vendored candle-core's backward pass (vendor/README.md): the first
//! gradient of a node is stored as it is rather than added to zeros, with
//! the checks the addition made, and later gradients are summed.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, Var};

/// y = x, whose backward returns `grad` reshaped to `shape`, or cast to `dtype`.
struct Passthrough {
    shape: Option<Vec<usize>>,
    dtype: Option<DType>,
}

impl CustomOp1 for Passthrough {
    fn name(&self) -> &'static str {
        "test-passthrough"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("f32 only")
        };
        let (a, b) = l.contiguous_offsets().expect("contiguous");
        Ok((CpuStorage::F32(v[a..b].to_vec()), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut g = grad.clone();
        if let Some(shape) = &self.shape {
            g = g.reshape(shape.as_slice())?;
        }
        if let Some(dtype) = self.dtype {
            g = g.to_dtype(dtype)?;
        }
        Ok(Some(g))
    }
}

fn var() -> Var {
    Var::from_tensor(
        &Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap(),
    )
    .unwrap()
}

/// The error of a backward pass through `op`.
fn backward_error(op: Passthrough) -> String {
    let x = var();
    let loss = x.as_tensor().apply_op1(op).unwrap().sum_all().unwrap();
    loss.backward().unwrap_err().to_string()
}

#[test]
fn a_wrongly_shaped_first_gradient_is_an_error() {
    let err = backward_error(Passthrough {
        shape: Some(vec![3, 2]),
        dtype: None,
    });
    assert!(err.contains("shape mismatch"), "{err}");
}

#[test]
fn a_first_gradient_of_another_dtype_is_an_error() {
    let err = backward_error(Passthrough {
        shape: None,
        dtype: Some(DType::F64),
    });
    assert!(err.contains("dtype mismatch"), "{err}");
}

#[test]
fn first_gradients_are_stored_and_later_ones_summed() {
    // loss = sum(x * x) + sum(3 x) + sum(x): x is reached three times.
    let x = var();
    let t = x.as_tensor();
    let loss = ((t * t).unwrap().sum_all().unwrap() + (t * 3.0).unwrap().sum_all().unwrap())
        .unwrap()
        .add(&t.sum_all().unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = grads
        .get(t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want: Vec<f32> = (0..6).map(|v| 2.0 * v as f32 + 4.0).collect();
    assert_eq!(g, want);
    // A node reached once keeps the gradient it was given, contiguous.
    let x2 = var();
    let loss = x2.as_tensor().t().unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap().remove(x2.as_tensor()).unwrap();
    assert!(g.is_contiguous());
    assert_eq!(g.dims(), &[2, 3]);
    assert_eq!(
        g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0; 6]
    );
}
