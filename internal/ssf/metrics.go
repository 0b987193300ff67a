package ssf

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// counter counts SETs by result on the global meter provider current at construction.
type counter struct{ c metric.Int64Counter }

func newCounter(name, desc string) counter {
	c, err := otel.Meter("condaccess/ssf").Int64Counter(name, metric.WithDescription(desc))
	if err != nil {
		return counter{}
	}
	return counter{c}
}

func (c counter) add(ctx context.Context, result string, n int) {
	if c.c != nil && n > 0 {
		c.c.Add(ctx, int64(n), metric.WithAttributes(attribute.String("result", result)))
	}
}

func newOutCounter() counter {
	return newCounter("condaccess.ssf.transmitter.sets",
		"SETs the transmitter delivered (result: pushed, push_failed, push_refused, polled_ack, polled_error) or did not hold (dropped_outbox_full)")
}

func newPauseCounter() counter {
	return newCounter("condaccess.ssf.transmitter.stream_pauses",
		"streams the transmitter paused on its own (result: outbox_full, inactivity_timeout)")
}

func newInCounter() counter {
	return newCounter("condaccess.ssf.receiver.sets", "SETs pushed to the receiver (result: applied, refused, unknown_event)")
}
