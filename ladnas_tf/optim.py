"""The weight optimizer of both the search and the training: PyTorch's SGD with momentum and coupled
weight decay, the rule DARTS and PC-DARTS train with (torch.optim.SGD(momentum, weight_decay)):

    g' = g + wd * w;   buf = momentum * buf + g';   w -= lr * buf

Keras' SGD keeps lr inside its velocity (v = momentum * v - lr * g; w += v), which differs from this
whenever the learning rate changes (every step of a cosine or linear schedule), and its weight_decay
is decoupled (w -= lr * wd * w, outside the momentum). The buffer is what DARTS's unrolled step
reads (architect.py), so it is exposed per variable.
"""
import keras
import tensorflow as tf

from ladnas_tf.bad_input import BadInput


@keras.saving.register_keras_serializable('ladnas_tf')
class MomentumSGD(keras.optimizers.Optimizer):
    """torch.optim.SGD(lr, momentum, weight_decay=l2) (dampening 0, no Nesterov) as a Keras optimizer.

    learning_rate: a float, a LearningRateSchedule of optimizer.iterations, or a callable. Gradients
    are used as given: clipping belongs to the caller, before the decay is added (as in DARTS:
    clip_grad_norm_ runs before optimizer.step())."""

    def __init__(self, learning_rate=0.025, momentum=0.9, l2=3e-4, name='momentum_sgd', **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise BadInput(f'momentum must lie in [0, 1), got {momentum}')
        if l2 < 0:
            raise BadInput(f'l2 (weight decay) must be >= 0, got {l2}')
        self.momentum, self.l2 = float(momentum), float(l2)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, 'momentum')

    def momentum_of(self, variable):
        """The momentum buffer of `variable` (PyTorch's state['momentum_buffer'])."""
        return self.momentums[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        m = self.momentums[self._get_variable_index(variable)].value
        gradient = tf.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + self.l2 * variable
        # TF's fused op is exactly PyTorch's rule (accum = mu accum + g; var -= lr accum), one op per
        # variable instead of five, which matters for tracing the search's large step graphs.
        tf.raw_ops.ResourceApplyMomentum(var=variable.handle, accum=m.handle,
                                         lr=tf.cast(learning_rate, variable.dtype), grad=gradient,
                                         momentum=tf.cast(self.momentum, variable.dtype))

    def get_config(self):
        return {**super().get_config(), 'momentum': self.momentum, 'l2': self.l2}
