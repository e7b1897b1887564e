// Message throughput of the hub, from the status samples this page has seen.

import { useEffect, useState } from "react";
import { addSample, messageRates, sampleOf, type CounterSample } from "./rates";
import type { Status } from "./types";

export function useThroughput(status: Status | undefined) {
  const [samples, setSamples] = useState<CounterSample[]>([]);
  useEffect(() => {
    if (status) setSamples((current) => addSample(current, sampleOf(status)));
  }, [status]);
  return messageRates(samples);
}
