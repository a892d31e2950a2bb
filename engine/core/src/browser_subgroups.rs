//! Subgroups for the engine's device in browsers. wgpu 30's WebGPU backend requests only
//! the features it maps, and it maps no `subgroups`, so the wasm engine would take the
//! shared-memory reductions everywhere (natively, subgroups make decode 2-8% faster on an
//! H100). While the engine requests its device, `requestDevice` adds `subgroups` where the
//! adapter has it; kernels pass WGSL to the browser as written, `enable subgroups;` included.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
let original = null;
export function requestSubgroups(on) {
  if (typeof GPUAdapter === 'undefined') return;
  const proto = GPUAdapter.prototype;
  if (on && !original) {
    original = proto.requestDevice;
    proto.requestDevice = function (descriptor = {}) {
      const features = [...(descriptor.requiredFeatures ?? [])];
      if (this.features.has('subgroups') && !features.includes('subgroups')) features.push('subgroups');
      return original.call(this, { ...descriptor, requiredFeatures: features });
    };
  } else if (!on && original) {
    proto.requestDevice = original;
    original = null;
  }
}
export function hasSubgroups(device) {
  return device.features.has('subgroups');
}
"#)]
extern "C" {
    /// Adds `subgroups` to the features of devices requested from now on (`true`), or
    /// restores the browser's own `requestDevice` (`false`).
    #[wasm_bindgen(js_name = requestSubgroups)]
    pub fn request_subgroups(on: bool);
    #[wasm_bindgen(js_name = hasSubgroups)]
    fn has_subgroups_js(device: &JsValue) -> bool;
}

/// Whether the device runs with the `subgroups` feature.
pub fn has_subgroups(device: &wgpu::Device) -> bool {
    device.as_webgpu().is_some_and(|d| has_subgroups_js(d.as_ref()))
}
