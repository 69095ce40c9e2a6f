fn expansion() {
    let batch = {
        let __batch_inventory = ::batch_runtime::__private::typed::<Reservation>();
        let __batch_payment = ::batch_runtime::__private::typed::<Charge>();
        let requests = ::batch_runtime::__private::requests([
            {
                #[allow(unused_imports)]
                use ::batch_runtime::__private::verbs::*;
                use ::batch_runtime::__private::request as __batch_request;
                __batch_request(post("/api/inventory/reserve").json(&reserve))
            },
            {
                #[allow(unused_imports)]
                use ::batch_runtime::__private::verbs::*;
                use ::batch_runtime::__private::request as __batch_request;
                __batch_request(post("/api/payments/charge").json(&charge))
            },
            {
                #[allow(unused_imports)]
                use ::batch_runtime::__private::verbs::*;
                use ::batch_runtime::__private::request as __batch_request;
                __batch_request(post("/api/warehouse/notify").json(&notify))
            },
        ]);
        {
            /// The keys of this batch, in definition order.
            #[derive(
                ::core::clone::Clone,
                ::core::marker::Copy,
                ::core::fmt::Debug,
                ::core::cmp::PartialEq,
                ::core::cmp::Eq,
                ::core::hash::Hash,
            )]
            enum Key {
                Inventory,
                Payment,
                Warehouse,
            }
            impl Key {
                /// Every key, in definition order.
                const ALL: [Key; 3] = [Key::Inventory, Key::Payment, Key::Warehouse];
                /// The key as written in `batch!`.
                const fn as_str(self) -> &'static str {
                    match self {
                        Key::Inventory => "inventory",
                        Key::Payment => "payment",
                        Key::Warehouse => "warehouse",
                    }
                }
            }
            impl ::core::fmt::Display for Key {
                fn fmt(
                    &self,
                    f: &mut ::core::fmt::Formatter<'_>,
                ) -> ::core::fmt::Result {
                    f.pad(self.as_str())
                }
            }
            let slots = {
                /// Every success value (`then |b, ok|`, `try_send`).
                #[allow(dead_code)]
                struct Succeeded<Out0, Out1> {
                    inventory: Out0,
                    payment: Out1,
                    warehouse: ::batch_runtime::Response,
                }
                /// Every result (`finally |b, all|`, `send`).
                #[allow(dead_code)]
                struct Results<Out0, Out1> {
                    inventory: ::core::result::Result<Out0, ::batch_runtime::Error>,
                    payment: ::core::result::Result<Out1, ::batch_runtime::Error>,
                    warehouse: ::core::result::Result<
                        ::batch_runtime::Response,
                        ::batch_runtime::Error,
                    >,
                }
                struct Slots<Out0, Out1> {
                    inventory: ::batch_runtime::__private::Typed<Out0>,
                    payment: ::batch_runtime::__private::Typed<Out1>,
                    warehouse: ::batch_runtime::__private::Slot<
                        ::batch_runtime::Response,
                    >,
                }
                impl<Out0, Out1> ::batch_runtime::__private::Slots
                for Slots<Out0, Out1> {
                    type Key = Key;
                    type AllOk = Succeeded<Out0, Out1>;
                    type All = Results<Out0, Out1>;
                    fn len(&self) -> usize {
                        3
                    }
                    fn key(&self, index: usize) -> Key {
                        Key::ALL[index]
                    }
                    fn decode(
                        &mut self,
                        index: usize,
                        response: &::batch_runtime::__private::Response,
                    ) -> ::core::result::Result<(), ::batch_runtime::__private::Error> {
                        match index {
                            0 => self.inventory.decode(response),
                            1 => self.payment.decode(response),
                            2 => {
                                self.warehouse
                                    .decode(::batch_runtime::__private::raw(response))
                            }
                            _ => ::core::unreachable!(),
                        }
                    }
                    fn keep(
                        &mut self,
                        index: usize,
                        response: ::batch_runtime::__private::Response,
                    ) -> ::core::result::Result<
                        &::batch_runtime::__private::Response,
                        ::batch_runtime::__private::Response,
                    > {
                        match index {
                            2 => {
                                ::batch_runtime::__private::keep_raw(
                                    &mut self.warehouse,
                                    response,
                                )
                            }
                            _ => ::core::result::Result::Err(response),
                        }
                    }
                    fn fail(
                        &mut self,
                        index: usize,
                        error: ::batch_runtime::__private::Error,
                    ) {
                        match index {
                            0 => self.inventory.fail(error),
                            1 => self.payment.fail(error),
                            2 => self.warehouse.fail(error),
                            _ => ::core::unreachable!(),
                        }
                    }
                    fn finish(self) -> ::core::result::Result<Self::AllOk, Self::All> {
                        match (
                            self.inventory.into_result(),
                            self.payment.into_result(),
                            self.warehouse.into_result(),
                        ) {
                            (
                                ::core::result::Result::Ok(inventory),
                                ::core::result::Result::Ok(payment),
                                ::core::result::Result::Ok(warehouse),
                            ) => {
                                ::core::result::Result::Ok(Succeeded {
                                    inventory: inventory,
                                    payment: payment,
                                    warehouse: warehouse,
                                })
                            }
                            (inventory, payment, warehouse) => {
                                ::core::result::Result::Err(Results {
                                    inventory: inventory,
                                    payment: payment,
                                    warehouse: warehouse,
                                })
                            }
                        }
                    }
                    fn widen(ok: Self::AllOk) -> Self::All {
                        Results {
                            inventory: ::core::result::Result::Ok(ok.inventory),
                            payment: ::core::result::Result::Ok(ok.payment),
                            warehouse: ::core::result::Result::Ok(ok.warehouse),
                        }
                    }
                    fn first_error(
                        all: Self::All,
                    ) -> ::core::result::Result<
                        Self::AllOk,
                        ::batch_runtime::__private::Error,
                    > {
                        ::core::result::Result::Ok(Succeeded {
                            inventory: all.inventory?,
                            payment: all.payment?,
                            warehouse: all.warehouse?,
                        })
                    }
                }
                Slots {
                    inventory: __batch_inventory,
                    payment: __batch_payment,
                    warehouse: ::core::default::Default::default(),
                }
            };
            ::batch_runtime::__private::with_arms(
                requests,
                slots,
                |__event| match __event {
                    ::batch_runtime::__private::ArmEvent::Before(b) => {
                        ::batch_runtime::__private::plain_arm(|| {
                            tracing::info!(total = b.total_requests())
                        })
                    }
                    ::batch_runtime::__private::ArmEvent::Progress(..) => {
                        ::core::option::Option::None
                    }
                    ::batch_runtime::__private::ArmEvent::Then(_, ok) => {
                        ::batch_runtime::__private::plain_arm(|| {
                            order.confirm(&ok.payment.confirmation)
                        })
                    }
                    ::batch_runtime::__private::ArmEvent::Catch(_, key, _) => {
                        ::batch_runtime::__private::plain_arm(|| match key {
                            Key::Inventory => {}
                            Key::Payment => {}
                            Key::Warehouse => {}
                        })
                    }
                    ::batch_runtime::__private::ArmEvent::Finally(_, all) => {
                        ::batch_runtime::__private::async_arm({
                            let failed = all.payment.is_err();
                            async move { audit.record(failed).await }
                        })
                    }
                },
            )
        }
    };
}
