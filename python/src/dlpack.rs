//! DLPack capsules of device tensors: the `dltensor` capsule that `torch.from_dlpack` (and CuPy,
//! JAX) take without a copy. The capsule owns the tensor until a consumer takes it (and then calls
//! its deleter when done), or frees it when dropped unconsumed.

use std::ffi::{c_void, CStr};
use std::ptr::null_mut;

use attnscope_core::attention::DeviceTensor;
use dlpark::ffi::{DLDataType, DLDataTypeCode, DLDevice, DLDeviceType, DLManagedTensor, DLTensor};
use pyo3::ffi;
use pyo3::prelude::*;

const NAME: &CStr = c"dltensor";

/// The managed tensor with what it points to: its shape and the device tensor itself.
struct Holder {
    managed: DLManagedTensor,
    shape: Vec<i64>,
    _tensor: Box<dyn DeviceTensor>,
}

/// The DLPack deleter: frees the holder (and so the device memory).
unsafe extern "C" fn delete_holder(m: *mut DLManagedTensor) {
    if !m.is_null() {
        // SAFETY: `manager_ctx` is the `Box<Holder>` leaked by `capsule`, freed only here.
        drop(unsafe { Box::from_raw((*m).manager_ctx as *mut Holder) });
    }
}

/// Frees the tensor of a capsule nobody consumed (a consumer renames it `used_dltensor`).
unsafe extern "C" fn drop_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule being destroyed.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, NAME.as_ptr()) as *mut DLManagedTensor;
            if let Some(delete) = (*m).deleter {
                delete(m);
            }
        }
    }
}

/// A `dltensor` capsule of the f32 CUDA tensor `t` (row-major, compact).
pub fn capsule(py: Python<'_>, t: Box<dyn DeviceTensor>) -> PyResult<Bound<'_, PyAny>> {
    let shape: Vec<i64> = t.shape().iter().map(|&x| x as i64).collect();
    let dl_tensor = DLTensor {
        data: t.device_ptr() as *mut c_void,
        device: DLDevice {
            device_type: DLDeviceType::CUDA,
            device_id: t.ordinal() as i32,
        },
        ndim: shape.len() as i32,
        dtype: DLDataType {
            code: DLDataTypeCode::FLOAT,
            bits: 32,
            lanes: 1,
        },
        shape: null_mut(),
        strides: null_mut(),
        byte_offset: 0,
    };
    let holder = Box::new(Holder {
        managed: DLManagedTensor {
            dl_tensor,
            manager_ctx: null_mut(),
            deleter: Some(delete_holder),
        },
        shape,
        _tensor: t,
    });
    let raw = Box::into_raw(holder);
    // SAFETY: `raw` is a fresh, leaked box; its shape vector is never resized.
    unsafe {
        (*raw).managed.dl_tensor.shape = (*raw).shape.as_mut_ptr();
        (*raw).managed.manager_ctx = raw as *mut c_void;
        let m = &mut (*raw).managed as *mut DLManagedTensor;
        let cap = ffi::PyCapsule_New(m as *mut c_void, NAME.as_ptr(), Some(drop_capsule));
        if cap.is_null() {
            delete_holder(m);
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, cap))
    }
}
