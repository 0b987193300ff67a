package consumer

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The metric condaccess_consumer_stuck is 1 while a consumer is stuck at an event it
// cannot apply, by consumer name; condaccess_consumer_stuck_revision is that event's
// revision. They are observed from every consumer created in the process.
var (
	regMu     sync.Mutex
	consumers = map[string]func() Status{}
	regOnce   sync.Once
)

func register(name string, status func() Status) {
	regMu.Lock()
	consumers[name] = status
	regMu.Unlock()
	regOnce.Do(registerMetrics)
}

func registerMetrics() {
	meter := otel.Meter("condaccess/consumer")
	stuck, err := meter.Int64ObservableGauge("condaccess_consumer_stuck",
		metric.WithDescription("1 while the consumer cannot apply the event at condaccess_consumer_stuck_revision (it retries, never skips)"))
	if err != nil {
		otel.Handle(err)
		return
	}
	rev, err := meter.Int64ObservableGauge("condaccess_consumer_stuck_revision",
		metric.WithDescription("revision of the event a stuck consumer cannot apply; 0 when not stuck"))
	if err != nil {
		otel.Handle(err)
		return
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		regMu.Lock()
		defer regMu.Unlock()
		for name, status := range consumers {
			st := status()
			attrs := metric.WithAttributes(attribute.String("consumer", name))
			v := int64(0)
			if st.Stuck {
				v = 1
			}
			o.ObserveInt64(stuck, v, attrs)
			o.ObserveInt64(rev, st.StuckRevision, attrs)
		}
		return nil
	}, stuck, rev); err != nil {
		otel.Handle(err)
	}
}
