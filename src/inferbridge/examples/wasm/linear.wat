;; A linear classifier for the inferbridge WASM ABI (version 1); no imports.
;;
;; inferbridge.examples fills in the placeholders: @FEATURES@ and @CLASSES@, and @WEIGHTS@,
;; the bytes of coef (f64, [classes, features], row-major) followed by intercept (f64,
;; [classes]), laid at address 1024. Inputs: one FP32 [N, features] tensor. Outputs: FP32
;; [N, classes] scores (x @ coef.T + intercept, summed in f64) and INT64 [N] labels (argmax).
(module
  (memory (export "memory") 1)
  (global $heap i32 (i32.const @HEAP@))
  (global $error (mut i32) (i32.const 0))
  (data (i32.const 512) "inputs must be finite numbers\00")
  (data (i32.const 1024) "@WEIGHTS@")

  ;; A scratch block at the heap base, growing memory as needed; 0 when memory.grow fails.
  (func (export "ib_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u
        (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 65535))
        (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.get $heap))

  (func (export "ib_error") (result i32) (global.get $error))

  (func (export "ib_infer") (param $batch i32) (param $inputs i32) (param $outputs i32)
    (result i32)
    (local $x i32) (local $scores i32) (local $labels i32) (local $row i32)
    (local $r i32) (local $c i32) (local $f i32) (local $best i32)
    (local $s f64) (local $top f64) (local $v f64)
    (local.set $x (i32.load (local.get $inputs)))
    (local.set $scores (i32.load (local.get $outputs)))
    (local.set $labels (i32.load offset=4 (local.get $outputs)))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $r) (local.get $batch)))
        (local.set $row (i32.add (local.get $x) (i32.mul (local.get $r) (i32.const @ROW_BYTES@))))
        (local.set $c (i32.const 0))
        (loop $classes
          (local.set $s
            (f64.load (i32.add (i32.const @INTERCEPT@) (i32.shl (local.get $c) (i32.const 3)))))
          (local.set $f (i32.const 0))
          (loop $features
            (local.set $v
              (f64.promote_f32
                (f32.load (i32.add (local.get $row) (i32.shl (local.get $f) (i32.const 2))))))
            ;; v - v is 0 for finite v and NaN for NaN or infinity.
            (if (f64.ne (f64.sub (local.get $v) (local.get $v)) (f64.const 0))
              (then (global.set $error (i32.const 512)) (return (i32.const 1))))
            (local.set $s
              (f64.add (local.get $s)
                (f64.mul (local.get $v)
                  (f64.load
                    (i32.add (i32.const 1024)
                      (i32.shl
                        (i32.add (i32.mul (local.get $c) (i32.const @FEATURES@)) (local.get $f))
                        (i32.const 3)))))))
            (local.set $f (i32.add (local.get $f) (i32.const 1)))
            (br_if $features (i32.lt_u (local.get $f) (i32.const @FEATURES@))))
          (f32.store
            (i32.add (local.get $scores)
              (i32.shl
                (i32.add (i32.mul (local.get $r) (i32.const @CLASSES@)) (local.get $c))
                (i32.const 2)))
            (f32.demote_f64 (local.get $s)))
          (if (i32.or (i32.eqz (local.get $c)) (f64.gt (local.get $s) (local.get $top)))
            (then (local.set $best (local.get $c)) (local.set $top (local.get $s))))
          (local.set $c (i32.add (local.get $c) (i32.const 1)))
          (br_if $classes (i32.lt_u (local.get $c) (i32.const @CLASSES@))))
        (i64.store
          (i32.add (local.get $labels) (i32.shl (local.get $r) (i32.const 3)))
          (i64.extend_i32_u (local.get $best)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows)))
    (i32.const 0))
)
